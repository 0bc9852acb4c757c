//! The API contract at `/openapi.json`: served without credentials, OpenAPI 3.1, every route
//! of the route table and the gateway's ping and enrollment in it with what it needs, every
//! reference resolved. (Conformance of real answers to it is schemathesis' job in CI.)

mod common;

use std::collections::BTreeSet;

use api::rest::route_specs;
use common::{Body, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn refs<'a>(v: &'a Value, out: &mut BTreeSet<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        out.insert(r);
                    }
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_covers_every_route_with_its_role_and_resolves() {
    let app = spawn_app().await;
    let reply = app.call(Method::GET, &format!("{}/openapi.json", app.api), None, Body::None).await;
    let doc = reply.expect(StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");

    let mut expected: Vec<(String, String)> =
        route_specs().into_iter().map(|r| (r.path.to_string(), r.method.to_ascii_lowercase())).collect();
    expected.push(("/v1/system/ping".into(), "post".into()));
    expected.push(("/v1/system/enroll".into(), "post".into()));
    let mut ids = BTreeSet::new();
    for (path, method) in &expected {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is missing from the contract");
        assert!(op["x-teletraan-needs"].as_str().is_some_and(|n| !n.is_empty()), "{method} {path} states no role");
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()), "duplicate operationId at {path}");
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|k| k.starts_with('2')), "{method} {path} has no success answer");
        for status in ["400", "401", "503"] {
            assert!(responses.contains_key(status), "{method} {path} does not document {status}");
        }
        for p in path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
            let params = op["parameters"].as_array().unwrap();
            assert!(params.iter().any(|x| x["name"] == p && x["in"] == "path"), "{method} {path}: no parameter {p}");
        }
    }
    let documented: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "the contract documents routes that do not exist");

    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external reference {r}"));
        assert!(doc.pointer(pointer).is_some(), "unresolved reference {r}");
    }

    // Schemas come from the serde types: the stage's JSON names its fields as the API does.
    let stage =
        &doc["paths"]["/v1/envs/{env}/{stage}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let name = stage["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
    let props = &doc["components"]["schemas"][name]["properties"];
    for field in ["envName", "stageName", "maxParallel", "scheduleId"] {
        assert!(props[field].is_object(), "the stage schema lacks {field}: {props}");
    }
    // A request body is the input type as it is read; the ping is described too.
    let create = &doc["paths"]["/v1/builds"]["post"];
    assert_eq!(
        create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Build"
    );
    assert!(create["requestBody"]["content"]["application/json"]["schema"]["properties"]["artifactUrl"].is_object());
    let ping = &doc["paths"]["/v1/system/ping"]["post"];
    assert!(ping["requestBody"]["content"]["application/json"]["schema"].is_object());
}
