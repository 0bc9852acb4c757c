//! The few REST calls the rollout benchmarks make, as an admin: create a stage with group
//! capacity, publish builds, deploy, read a deploy.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The REST API with an admin token.
pub struct Admin {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Admin {
    /// A client of the API at `base` (http://HOST:PORT).
    pub fn new(base: &str, token: &str) -> anyhow::Result<Admin> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        Ok(Admin { http, base: base.trim_end_matches('/').to_string(), auth: format!("token {token}") })
    }

    /// A call whose answer must be a success; its status and JSON body.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req =
            self.http.request(method.clone(), format!("{}{path}", self.base)).header("Authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("{method} {path}: the API is unreachable"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            bail!("{method} {path}: HTTP {status}: {text}");
        }
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Creates stage `env/stage` with `settings` (e.g. `{"maxParallelPct": 10}`) and group
    /// capacity `group`.
    pub async fn stage(&self, env: &str, stage: &str, group: &str, settings: Value) -> anyhow::Result<()> {
        let mut body = json!({"envName": env, "stageName": stage});
        if let (Some(b), Some(s)) = (body.as_object_mut(), settings.as_object()) {
            b.extend(s.clone());
        }
        self.call(reqwest::Method::POST, "/v1/envs", Some(body)).await?;
        let path = format!("/v1/envs/{env}/{stage}/capacity?capacityType=GROUP");
        self.call(reqwest::Method::PUT, &path, Some(json!([group]))).await?;
        Ok(())
    }

    /// Publishes build number `n` of `name`; its id.
    pub async fn publish(&self, name: &str, n: u32) -> anyhow::Result<String> {
        let body = json!({"name": name, "artifactUrl": format!("https://artifacts.example.com/{name}-{n}.tar.gz"),
            "artifactSha256": crate::sample::UNDOWNLOADED_SHA256,
            "repo": format!("org/{name}"), "branch": "main", "commit": format!("{n:08}abcdef0123456789")});
        let (_, build) = self.call(reqwest::Method::POST, "/v1/builds", Some(body)).await?;
        build["id"].as_str().map(String::from).context("the build has no id")
    }

    /// Deploys `build` on `env/stage`; the deploy's id once a worker created it (a 202 is
    /// followed until the command is done).
    pub async fn deploy(&self, env: &str, stage: &str, build: &str) -> anyhow::Result<String> {
        let path = format!("/v1/envs/{env}/{stage}/deploys?buildId={build}");
        let (status, body) = self.call(reqwest::Method::POST, &path, None).await?;
        if status != 202 {
            return body["id"].as_str().map(String::from).context("the deploy has no id");
        }
        let id = body["id"].as_str().context("a 202 without a command id")?.to_string();
        let end = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < end {
            let (_, c) = self.call(reqwest::Method::GET, &format!("/v1/commands/{id}"), None).await?;
            match c["status"].as_str() {
                Some("DONE") => return c["result"]["id"].as_str().map(String::from).context("no deploy in the result"),
                Some("FAILED") => bail!("the deploy failed: {}", c["error"]),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        bail!("command {id} was not applied within 120 s")
    }

    /// The state of a deploy (`RUNNING`, `SUCCEEDING`…).
    pub async fn deploy_state(&self, id: &str) -> anyhow::Result<String> {
        let (_, d) = self.call(reqwest::Method::GET, &format!("/v1/deploys/{id}"), None).await?;
        d["state"].as_str().map(String::from).context("the deploy has no state")
    }

    /// Waits until deploy `id` is SUCCEEDING (every host's record done in Postgres).
    pub async fn wait_succeeding(&self, id: &str, deadline: Duration) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let state = self.deploy_state(id).await?;
            if state == "SUCCEEDING" || state == "SUCCEEDED" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= end {
                bail!("deploy {id} is still {state} after {} s", deadline.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
