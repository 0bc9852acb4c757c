//! The REST API against real Postgres and RabbitMQ: stages and their configuration, builds,
//! deploys (applied by a real worker), one database and one broker namespace per test.

mod common;

use common::{App, Body, spawn_app, str_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_stage_answers_201_with_teletraan_defaults_and_a_duplicate_409() {
    let app = spawn_app().await;

    let reply = app.post("/v1/envs", &json!({"envName": "web", "stageName": "prod"})).await;
    assert_eq!(reply.location.as_deref(), Some("/v1/envs/web/prod"));
    let stage = reply.expect(StatusCode::CREATED);
    assert_eq!(stage["envName"], "web");
    assert_eq!(stage["stageName"], "prod");
    assert_eq!(stage["maxParallel"], 1);
    assert_eq!(stage["maxParallelPct"], 0);
    assert_eq!(stage["successThreshold"], 10000);
    assert_eq!(stage["stuckThreshold"], 600);
    assert_eq!(stage["buildName"], "web", "buildName defaults to the environment name");
    assert_eq!(stage["envState"], "NORMAL");
    assert_eq!(stage["lastOperator"], "admin");
    assert!(stage["id"].as_str().is_some_and(|id| !id.is_empty()), "{stage}");
    assert!(stage.get("max_parallel").is_none(), "the body is camelCase: {stage}");

    let again = app.post("/v1/envs", &json!({"envName": "web", "stageName": "prod"})).await;
    let (code, message) = again.expect_error(StatusCode::CONFLICT);
    assert_eq!(code, "conflict");
    assert!(message.contains("web/prod"), "{message}");

    // The stage that exists is the first one.
    let stored = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    assert_eq!(stored, stage);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_by_env_name_returns_only_that_environments_stages() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.create_stage("web", "beta").await;
    app.create_stage("api", "prod").await;

    let web = app.get("/v1/envs?envName=web").await.expect(StatusCode::OK);
    let names: Vec<(&str, &str)> =
        web.as_array().unwrap().iter().map(|s| (str_of(s, "envName"), str_of(s, "stageName"))).collect();
    assert_eq!(names, [("web", "beta"), ("web", "prod")]);

    let all = app.get("/v1/envs").await.expect(StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let none = app.get("/v1/envs?envName=nothing").await.expect(StatusCode::OK);
    assert_eq!(none, json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_update_changes_only_the_fields_it_names() {
    let app = spawn_app().await;
    let before = app.create_stage("web", "prod").await;

    let update = json!({"description": "the web tier", "maxParallel": 3, "stuckThreshold": 900});
    let reply = app.put("/v1/envs/web/prod", &update).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(reply.text.is_empty(), "204 has no body: {}", reply.text);

    let after = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    assert_eq!(after["description"], "the web tier");
    assert_eq!(after["maxParallel"], 3);
    assert_eq!(after["stuckThreshold"], 900);
    for unchanged in ["id", "buildName", "successThreshold", "maxParallelPct", "branch", "priority", "stageType"] {
        assert_eq!(after[unchanged], before[unchanged], "{unchanged} must not change");
    }

    // An empty update leaves the configuration as it is.
    app.put("/v1/envs/web/prod", &json!({})).await.expect(StatusCode::NO_CONTENT);
    let again = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    assert_eq!((&again["description"], &again["maxParallel"]), (&after["description"], &after["maxParallel"]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_with_capacity_cannot_be_deleted_and_one_without_can() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.set_capacity("web", "prod", "GROUP", &["web-g"]).await;

    let (code, _) = app.delete("/v1/envs/web/prod").await.expect_error(StatusCode::CONFLICT);
    assert_eq!(code, "conflict");
    app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);

    app.set_capacity("web", "prod", "GROUP", &[]).await;
    let reply = app.delete("/v1/envs/web/prod").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let (_, message) = app.get("/v1/envs/web/prod").await.expect_error(StatusCode::NOT_FOUND);
    assert_eq!(message, "Environment web/prod does not exist.");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_and_host_capacity_are_kept_apart_sorted_and_deduplicated() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let capacity = |kind: &str| format!("/v1/envs/web/prod/capacity?capacityType={kind}");

    assert_eq!(app.get(&capacity("GROUP")).await.expect(StatusCode::OK), json!([]));
    app.put(&capacity("GROUP"), &json!(["web-b", "web-a", "web-b"])).await.expect(StatusCode::NO_CONTENT);
    app.put(&capacity("HOST"), &json!(["web-7.example.com"])).await.expect(StatusCode::NO_CONTENT);

    assert_eq!(app.get(&capacity("GROUP")).await.expect(StatusCode::OK), json!(["web-a", "web-b"]));
    assert_eq!(app.get(&capacity("HOST")).await.expect(StatusCode::OK), json!(["web-7.example.com"]));
    // GROUP is the default, and the type is read case-insensitively.
    assert_eq!(app.get("/v1/envs/web/prod/capacity").await.expect(StatusCode::OK), json!(["web-a", "web-b"]));
    assert_eq!(app.get(&capacity("host")).await.expect(StatusCode::OK), json!(["web-7.example.com"]));

    // A PUT replaces the whole list.
    app.put(&capacity("GROUP"), &json!(["web-c"])).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get(&capacity("GROUP")).await.expect(StatusCode::OK), json!(["web-c"]));
    assert_eq!(app.get(&capacity("HOST")).await.expect(StatusCode::OK), json!(["web-7.example.com"]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_and_agent_configs_round_trip_and_stay_apart() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;

    for which in ["script_configs", "agent_configs"] {
        let path = format!("/v1/envs/web/prod/{which}");
        assert_eq!(app.get(&path).await.expect(StatusCode::OK), json!({}), "{which} starts empty");
    }
    let scripts = json!({"JAVA_OPTS": "-Xmx2g -Dx=y", "PORT": "8080"});
    let agent = json!({"max_retry": "5", "RESTARTING.process_timeout": "600"});
    app.put("/v1/envs/web/prod/script_configs", &scripts).await.expect(StatusCode::NO_CONTENT);
    app.put("/v1/envs/web/prod/agent_configs", &agent).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/envs/web/prod/script_configs").await.expect(StatusCode::OK), scripts);
    assert_eq!(app.get("/v1/envs/web/prod/agent_configs").await.expect(StatusCode::OK), agent);

    // A PUT replaces the map.
    app.put("/v1/envs/web/prod/script_configs", &json!({"PORT": "9090"})).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/envs/web/prod/script_configs").await.expect(StatusCode::OK), json!({"PORT": "9090"}));
    assert_eq!(app.get("/v1/envs/web/prod/agent_configs").await.expect(StatusCode::OK), agent);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_build_gets_an_id_ending_in_its_short_commit_and_the_token_name_as_publisher() {
    let app = spawn_app().await;
    let input = json!({
        "name": "web",
        "artifactUrl": "https://artifacts.example.com/web/fabe9af.tar.gz",
        "type": "GitHub",
        "repo": "org/web",
        "branch": "main",
        "commit": "fabe9af6ac4c0123456789",
        "artifactSha256": common::SOME_SHA256,
    });
    let reply = app.post("/v1/builds", &input).await;
    let location = reply.location.clone();
    let build = reply.expect(StatusCode::CREATED);
    let id = str_of(&build, "id");
    assert!(id.ends_with("_fabe9af"), "{id}");
    assert_eq!(location, Some(format!("/v1/builds/{id}")));
    assert_eq!(build["publisher"], "admin");
    assert_eq!(build["commitShort"], "fabe9af");
    assert_eq!(build["artifactUrl"], input["artifactUrl"]);
    assert_eq!(build["type"], "GitHub");

    assert_eq!(app.get(&format!("/v1/builds/{id}")).await.expect(StatusCode::OK), build);
    let by_commit = app.get("/v1/builds?commit=fabe9af6").await.expect(StatusCode::OK);
    assert_eq!(by_commit, json!([build]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_of_a_name_are_listed_newest_first() {
    let app = spawn_app().await;
    let older = app.publish_build("web", "aaaaaaa1").await;
    // Publish dates are milliseconds: make sure the second build is published in a later one.
    let older_date = older["publishDate"].as_i64().unwrap();
    while schema::time::now_ms() <= older_date {
        tokio::task::yield_now().await;
    }
    let newer = app.publish_build("web", "bbbbbbb2").await;
    app.publish_build("api", "ccccccc3").await;

    let listed = app.get("/v1/builds?name=web").await.expect(StatusCode::OK);
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|b| str_of(b, "id")).collect();
    assert_eq!(ids, [str_of(&newer, "id"), str_of(&older, "id")]);

    let page = app.get("/v1/builds?name=web&pageIndex=2&pageSize=1").await.expect(StatusCode::OK);
    assert_eq!(page, json!([older]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searching_builds_without_name_or_commit_is_400() {
    let app = spawn_app().await;
    app.publish_build("web", "aaaaaaa1").await;
    for path in ["/v1/builds", "/v1/builds?name=", "/v1/builds?branch=main"] {
        let (code, _) = app.get(path).await.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(code, "bad_request", "{path}");
    }
    app.stop().await;
}

/// A stage `web/prod` without hosts and two builds of `web`.
async fn stage_and_two_builds(app: &App) -> (Value, Value) {
    app.create_stage("web", "prod").await;
    (app.publish_build("web", "1111111a").await, app.publish_build("web", "2222222b").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_answers_201_with_the_running_deploy_and_reads_agree() {
    let app = spawn_app().await;
    let (build, _) = stage_and_two_builds(&app).await;
    let stage = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);

    let path = format!("/v1/envs/web/prod/deploys?buildId={}&description=first", str_of(&build, "id"));
    let reply = app.admin(Method::POST, &path, Body::None).await;
    assert_eq!(reply.location.as_deref(), Some("/v1/envs/web/prod/deploys/current"));
    let deploy = reply.expect(StatusCode::CREATED);
    assert_eq!(deploy["state"], "RUNNING");
    assert_eq!(deploy["acceptanceStatus"], "PENDING_DEPLOY");
    assert_eq!(deploy["type"], "REGULAR");
    assert_eq!(deploy["buildId"], build["id"]);
    assert_eq!(deploy["envId"], stage["id"]);
    assert_eq!(deploy["operator"], "admin");
    assert_eq!(deploy["description"], "first");
    assert_eq!(deploy["total"], 0);

    let current = app.get("/v1/envs/web/prod/deploys/current").await.expect(StatusCode::OK);
    let by_id = app.deploy_by_id(str_of(&deploy, "id")).await;
    assert_eq!(current, by_id);
    assert_eq!(current["id"], deploy["id"]);
    assert_eq!(current["state"], "RUNNING");

    let stage = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    assert_eq!(stage["deployId"], deploy["id"]);
    assert_eq!(stage["deployType"], "REGULAR");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deploy_aborts_a_first_that_never_succeeded() {
    let app = spawn_app().await;
    let (first_build, second_build) = stage_and_two_builds(&app).await;

    let first = app.deploy("web", "prod", str_of(&first_build, "id")).await;
    let second = app.deploy("web", "prod", str_of(&second_build, "id")).await;
    assert_ne!(first["id"], second["id"]);

    // No hosts: the first deploy never succeeded, so it is retired as ABORTED.
    let retired = app.deploy_by_id(str_of(&first, "id")).await;
    assert_eq!(retired["state"], "ABORTED");
    assert_eq!(retired["acceptanceStatus"], "TERMINATED");
    let current = app.get("/v1/envs/web/prod/deploys/current").await.expect(StatusCode::OK);
    assert_eq!(current["id"], second["id"]);
    assert_eq!(current["state"], "RUNNING");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_command_is_404() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let reply = app.get(&format!("/v1/commands/{id}")).await;
    let (code, message) = reply.expect_error(StatusCode::NOT_FOUND);
    assert_eq!(code, "not_found");
    assert_eq!(message, format!("Command {id} does not exist."));
    app.stop().await;
}
