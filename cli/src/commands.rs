//! What each client command does, over the REST API.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use schema::DeployId;
use schema::model::Deploy;
use serde_json::{Map, Value, json};

use crate::args::{
    BuildCommand, CapacityCommand, CapacityTarget, ClientArgs, Command, ConfigCommand, ConfigKind, ContextCommand,
    DeployArgs, EnvCommand, Login, Shell, StageCommand, TokenCommand, Verdict, WaitArgs,
};
use crate::client::{Client, Reply, seg};
use crate::config::{self, Config, Context};
use crate::error::CliError;
use crate::follow::{Follow, follow};
use crate::output::{Out, text, time};

type Result<T> = std::result::Result<T, CliError>;

/// Runs a command.
pub async fn run(command: Command, app: impl FnOnce() -> clap::Command) -> Result<()> {
    match command {
        Command::Login(login) => self::login(login).await,
        Command::Context { command, client } => context(command, &Out::of(&client)),
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut app(), "teletraan", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man(app(), dir),
        Command::Env { command, client } => env(command, &Session::open(&client)?).await,
        Command::Stage { command, client } => stage(command, &Session::open(&client)?).await,
        Command::Build { command, client } => build(command, &Session::open(&client)?).await,
        Command::Deploy { args, client } => deploy(args, &Session::open(&client)?).await,
        Command::Promote { env, from_stage, to_stage, wait, client } => {
            let s = Session::open(&client)?;
            let from: Deploy = s.client.get(&format!("{}/deploys/current", stage_path(&env, &from_stage))).await?;
            let query = format!("actionType=PROMOTE&fromDeployId={}", seg(from.id.as_str()));
            action(&s, &env, &to_stage, &query, Some(wait)).await
        }
        Command::Rollback { env, stage, to, mark_bad, wait, client } => {
            let s = Session::open(&client)?;
            let mut query = "actionType=ROLLBACK".to_string();
            if let Some(to) = to {
                query.push_str(&format!("&toDeployId={}", seg(&to)));
            }
            if mark_bad {
                query.push_str("&markBad=true");
            }
            action(&s, &env, &stage, &query, Some(wait)).await
        }
        Command::Restart { env, stage, wait, client } => {
            action(&Session::open(&client)?, &env, &stage, "actionType=RESTART", Some(wait)).await
        }
        Command::Pause { env, stage, client } => {
            action(&Session::open(&client)?, &env, &stage, "actionType=PAUSE", None).await
        }
        Command::Resume { env, stage, client } => {
            action(&Session::open(&client)?, &env, &stage, "actionType=RESUME", None).await
        }
        Command::Status { env, stage, watch, timeout, client } => {
            status(&Session::open(&client)?, &env, &stage, watch, timeout).await
        }
        Command::Hosts { env, stage, client } => hosts(&Session::open(&client)?, &env, &stage).await,
        Command::History { env, stage, limit, client } => history(&Session::open(&client)?, &env, &stage, limit).await,
        Command::Token { command, client } => token(command, &Session::open(&client)?).await,
    }
}

/// A client and where its output goes.
struct Session {
    client: Client,
    out: Out,
}

impl Session {
    fn open(args: &ClientArgs) -> Result<Session> {
        let ctx = config::resolve(args)?;
        Ok(Session { client: Client::new(&ctx)?, out: Out::of(args) })
    }
}

fn stage_path(env: &str, stage: &str) -> String {
    format!("/v1/envs/{}/{}", seg(env), seg(stage))
}

async fn login(login: Login) -> Result<()> {
    let token = match login.token.filter(|t| !t.is_empty()) {
        Some(t) => t,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("Token for {}: ", login.url);
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::usage(format!("reading the token: {e}")))?;
            line.trim().to_string()
        }
    };
    if token.is_empty() {
        return Err(CliError::usage("no token given (--token, TELETRAAN_TOKEN or standard input)"));
    }
    let ctx = Context { url: login.url.trim_end_matches('/').to_string(), token };
    // The token must work before it is stored.
    let me: Value = Client::new(&ctx)?.get("/v1/me").await?;
    let path = config::path()?;
    let mut config = Config::load(&path)?;
    config.contexts.insert(login.name.clone(), ctx);
    config.current = Some(login.name.clone());
    config.save(&path)?;
    println!(
        "Logged in to {} as {} (context {:?}, stored in {}).",
        login.url,
        text(&me["name"]),
        login.name,
        path.display()
    );
    Ok(())
}

fn context(command: ContextCommand, out: &Out) -> Result<()> {
    let path = config::path()?;
    let mut config = Config::load(&path)?;
    match command {
        ContextCommand::List => {
            let json: Vec<Value> = config
                .contexts
                .iter()
                .map(|(name, c)| json!({"name": name, "url": c.url, "current": config.current.as_ref() == Some(name)}))
                .collect();
            out.read(&Value::Array(json.clone()), &["CURRENT", "NAME", "URL"], || {
                json.iter()
                    .map(|c| {
                        let mark = if c["current"] == json!(true) { "*" } else { "" };
                        vec![mark.into(), text(&c["name"]), text(&c["url"])]
                    })
                    .collect()
            });
            Ok(())
        }
        ContextCommand::Use { name } => {
            if !config.contexts.contains_key(&name) {
                return Err(CliError::usage(format!("no context {name:?} (see: teletraan context list)")));
            }
            config.current = Some(name.clone());
            config.save(&path)?;
            out.line(&format!("Now using context {name:?}."));
            Ok(())
        }
        ContextCommand::Delete { name } => {
            if config.contexts.remove(&name).is_none() {
                return Err(CliError::usage(format!("no context {name:?} (see: teletraan context list)")));
            }
            if config.current.as_ref() == Some(&name) {
                config.current = None;
            }
            config.save(&path)?;
            out.line(&format!("Context {name:?} forgotten."));
            Ok(())
        }
    }
}

fn man(app: clap::Command, dir: Option<std::path::PathBuf>) -> Result<()> {
    let fail = |e: std::io::Error| CliError::failed(format!("writing the man page: {e}"));
    match dir {
        None => clap_mangen::Man::new(app).render(&mut std::io::stdout()).map_err(fail),
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(fail)?;
            let mut pages = vec![("teletraan".to_string(), app.clone())];
            for sub in app.get_subcommands() {
                pages.push((
                    format!("teletraan-{}", sub.get_name()),
                    sub.clone().display_name(format!("teletraan-{}", sub.get_name())),
                ));
            }
            for (name, cmd) in pages {
                let mut file = std::fs::File::create(dir.join(format!("{name}.1"))).map_err(fail)?;
                clap_mangen::Man::new(cmd).render(&mut file).map_err(fail)?;
            }
            Ok(())
        }
    }
}

/// `NAME=VALUE` pairs as a JSON object: a value that reads as JSON (`5`, `true`, `"x"`,
/// `[…]`) is taken as such, any other as a string.
fn settings(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(CliError::usage(format!("{pair:?} is not NAME=VALUE")));
        };
        if name.trim().is_empty() {
            return Err(CliError::usage(format!("{pair:?} has no name")));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        out.insert(name.trim().to_string(), value);
    }
    Ok(out)
}

const STAGE_HEADERS: [&str; 6] = ["ENV", "STAGE", "BUILD NAME", "MAX PARALLEL", "STATE", "DEPLOY"];

fn stage_row(e: &Value) -> Vec<String> {
    let parallel = match e["maxParallelPct"].as_i64() {
        Some(p) if p > 0 => format!("{p}%"),
        _ => text(&e["maxParallel"]),
    };
    vec![
        text(&e["envName"]),
        text(&e["stageName"]),
        text(&e["buildName"]),
        parallel,
        text(&e["envState"]),
        text(&e["deployId"]),
    ]
}

async fn env(command: EnvCommand, s: &Session) -> Result<()> {
    match command {
        EnvCommand::List { env } => {
            let path = match &env {
                Some(e) => format!("/v1/envs?envName={}", seg(e)),
                None => "/v1/envs".into(),
            };
            let stages: Value = s.client.get(&path).await?;
            s.out.read(&stages, &STAGE_HEADERS, || stages.as_array().into_iter().flatten().map(stage_row).collect());
            Ok(())
        }
        EnvCommand::Show { env, stage } => {
            let e: Value = s.client.get(&stage_path(&env, &stage)).await?;
            s.out.read(&e, &["SETTING", "VALUE"], || {
                e.as_object().into_iter().flatten().map(|(k, v)| vec![k.clone(), text(v)]).collect()
            });
            Ok(())
        }
        EnvCommand::Create { env, stage, set } => {
            let mut body = settings(&set)?;
            body.insert("envName".into(), json!(env));
            body.insert("stageName".into(), json!(stage));
            let reply = s.client.write(Method::POST, "/v1/envs", Some(&Value::Object(body))).await?;
            s.out.done(&reply.body, &format!("Created {env}/{stage}."));
            Ok(())
        }
        EnvCommand::Update { env, stage, set } => {
            let body = Value::Object(settings(&set)?);
            s.client.write(Method::PUT, &stage_path(&env, &stage), Some(&body)).await?;
            let e: Value = s.client.get(&stage_path(&env, &stage)).await?;
            s.out.done(&e, &format!("Updated {env}/{stage}."));
            Ok(())
        }
        EnvCommand::Delete { env, stage, yes } => {
            if !yes {
                return Err(CliError::usage(format!("deleting {env}/{stage} cannot be undone: add --yes")));
            }
            s.client.write(Method::DELETE, &stage_path(&env, &stage), None).await?;
            s.out.done(&Value::Null, &format!("Deleted {env}/{stage}."));
            Ok(())
        }
    }
}

fn capacity_query(t: &CapacityTarget) -> (&'static str, String) {
    match (&t.group, &t.host) {
        (Some(g), _) => ("GROUP", g.clone()),
        (None, Some(h)) => ("HOST", h.clone()),
        (None, None) => ("GROUP", String::new()),
    }
}

fn config_path(env: &str, stage: &str, kind: ConfigKind) -> String {
    let what = match kind {
        ConfigKind::Script => "script_configs",
        ConfigKind::Agent => "agent_configs",
        ConfigKind::Promotes => "promotes",
    };
    format!("{}/{what}", stage_path(env, stage))
}

async fn stage(command: StageCommand, s: &Session) -> Result<()> {
    match command {
        StageCommand::Capacity { command: CapacityCommand::List { env, stage } } => {
            let base = format!("{}/capacity", stage_path(&env, &stage));
            let groups: Vec<String> = s.client.get(&format!("{base}?capacityType=GROUP")).await?;
            let hosts: Vec<String> = s.client.get(&format!("{base}?capacityType=HOST")).await?;
            let json = json!({"groups": groups, "hosts": hosts});
            s.out.read(&json, &["TYPE", "NAME"], || {
                let groups = groups.iter().map(|g| vec!["group".into(), g.clone()]);
                groups.chain(hosts.iter().map(|h| vec!["host".into(), h.clone()])).collect()
            });
            Ok(())
        }
        StageCommand::Capacity { command: CapacityCommand::Add { env, stage, target } } => {
            let (kind, name) = capacity_query(&target);
            let path = format!("{}/capacity?capacityType={kind}", stage_path(&env, &stage));
            s.client.write(Method::POST, &path, Some(&json!(name))).await?;
            s.out.done(&Value::Null, &format!("{env}/{stage} now deploys to {} {name}.", kind.to_lowercase()));
            Ok(())
        }
        StageCommand::Capacity { command: CapacityCommand::Remove { env, stage, target } } => {
            let (kind, name) = capacity_query(&target);
            let path = format!("{}/capacity?capacityType={kind}", stage_path(&env, &stage));
            s.client.write(Method::DELETE, &path, Some(&json!(name))).await?;
            s.out.done(&Value::Null, &format!("{env}/{stage} no longer deploys to {} {name}.", kind.to_lowercase()));
            Ok(())
        }
        StageCommand::Config { command: ConfigCommand::Get { env, stage, kind } } => {
            let v: Value = s.client.get(&config_path(&env, &stage, kind)).await?;
            s.out.read(&v, &["NAME", "VALUE"], || {
                v.as_object().into_iter().flatten().map(|(k, v)| vec![k.clone(), text(v)]).collect()
            });
            Ok(())
        }
        StageCommand::Config { command: ConfigCommand::Set { env, stage, kind, entries } } => {
            let path = config_path(&env, &stage, kind);
            // Promotion settings absent from a request keep their value; variables are
            // replaced as a whole, so the others are sent again.
            let mut current: Map<String, Value> =
                if kind == ConfigKind::Promotes { Map::new() } else { s.client.get(&path).await? };
            for (name, value) in settings(&entries)? {
                match (kind, &value) {
                    // Variables are strings; `NAME=` removes one.
                    (ConfigKind::Script | ConfigKind::Agent, Value::String(v)) if v.is_empty() => {
                        current.remove(&name);
                    }
                    (ConfigKind::Script | ConfigKind::Agent, Value::String(_)) => {
                        current.insert(name, value);
                    }
                    (ConfigKind::Script | ConfigKind::Agent, other) => {
                        current.insert(name, Value::String(other.to_string()));
                    }
                    (ConfigKind::Promotes, _) => {
                        current.insert(name, value);
                    }
                }
            }
            let reply = s.client.write(Method::PUT, &path, Some(&Value::Object(current))).await?;
            s.out.done(&reply.body, &format!("Saved the {} configuration of {env}/{stage}.", kind_name(kind)));
            Ok(())
        }
    }
}

fn kind_name(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::Script => "script",
        ConfigKind::Agent => "agent",
        ConfigKind::Promotes => "promotion",
    }
}

const BUILD_HEADERS: [&str; 6] = ["ID", "NAME", "BRANCH", "COMMIT", "PUBLISHED", "TAG"];

fn build_row(b: &Value) -> Vec<String> {
    let build = if b["build"].is_object() { &b["build"] } else { b };
    vec![
        text(&build["id"]),
        text(&build["name"]),
        text(&build["branch"]),
        text(&build["commitShort"]),
        time(&build["publishDate"]),
        text(&b["tag"]["value"]),
    ]
}

async fn build(command: BuildCommand, s: &Session) -> Result<()> {
    match command {
        BuildCommand::Publish { name, artifact_url, sha256, commit, repo, branch } => {
            let mut body = json!({"name": name, "artifactUrl": artifact_url, "commit": commit});
            for (field, value) in [("artifactSha256", sha256), ("repo", repo), ("branch", branch)] {
                if let Some(v) = value {
                    body[field] = json!(v);
                }
            }
            let reply = s.client.write(Method::POST, "/v1/builds", Some(&body)).await?;
            s.out.done(&reply.body, &format!("Published build {}.", text(&reply.body["id"])));
            Ok(())
        }
        BuildCommand::List { name, branch, limit } => {
            let mut path = format!("/v1/builds/tags?pageIndex=1&pageSize={limit}");
            if let Some(n) = name {
                path.push_str(&format!("&name={}", seg(&n)));
            }
            if let Some(b) = branch {
                path.push_str(&format!("&branch={}", seg(&b)));
            }
            let builds: Value = s.client.get(&path).await?;
            s.out.read(&builds, &BUILD_HEADERS, || builds.as_array().into_iter().flatten().map(build_row).collect());
            Ok(())
        }
        BuildCommand::Show { id } => {
            let b: Value = s.client.get(&format!("/v1/builds/{}/tags", seg(&id))).await?;
            let build = if b["build"].is_object() { &b["build"] } else { &b };
            s.out.read(&b, &["FIELD", "VALUE"], || {
                let mut rows: Vec<Vec<String>> =
                    build.as_object().into_iter().flatten().map(|(k, v)| vec![k.clone(), text(v)]).collect();
                rows.push(vec!["tag".into(), text(&b["tag"]["value"])]);
                rows
            });
            Ok(())
        }
        BuildCommand::Tag { id, verdict, comment } => {
            let value = match verdict {
                Verdict::Good => "GOOD_BUILD",
                Verdict::Bad => "BAD_BUILD",
            };
            let mut body = json!({"value": value, "targetType": "BUILD", "targetId": id});
            if let Some(c) = comment {
                body["comments"] = json!(c);
            }
            let reply = s.client.write(Method::POST, "/v1/tags", Some(&body)).await?;
            s.out.done(&reply.body, &format!("Build {id} tagged {value}."));
            Ok(())
        }
    }
}

async fn deploy(args: DeployArgs, s: &Session) -> Result<()> {
    let mut path = format!("{}/deploys?buildId={}", stage_path(&args.env, &args.stage), seg(&args.build));
    if let Some(d) = &args.description {
        path.push_str(&format!("&description={}", seg(d)));
    }
    let reply = s.client.command(Method::POST, &path, None).await?;
    let deploy = applied(s, reply, args.wait.timeout).await?;
    finish(s, &args.env, &args.stage, deploy, Some(args.wait), "Deploying").await
}

/// A deploy action; `wait` for those that make a deploy.
async fn action(s: &Session, env: &str, stage: &str, query: &str, wait: Option<WaitArgs>) -> Result<()> {
    let path = format!("{}/deploys/current/actions?{query}", stage_path(env, stage));
    let reply = s.client.command(Method::POST, &path, None).await?;
    let timeout = wait.map_or(Duration::from_secs(60), |w| w.timeout);
    let result = applied(s, reply, timeout).await?;
    match wait {
        Some(_) => finish(s, env, stage, result, wait, "Started").await,
        None => {
            let verb = if query.contains("PAUSE") { "Paused" } else { "Resumed" };
            s.out.done(&result, &format!("{verb} {env}/{stage}."));
            Ok(())
        }
    }
}

/// The outcome of a command: its answer, or, when the server answered 202 (a worker is slow),
/// the command's result once a worker applied it.
async fn applied(s: &Session, reply: Reply, timeout: Duration) -> Result<Value> {
    if reply.status != StatusCode::ACCEPTED {
        return Ok(reply.body);
    }
    let id = text(&reply.body["id"]);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status: Value = s.client.get(&format!("/v1/commands/{}", seg(&id))).await?;
        match status["status"].as_str() {
            Some("DONE") => return Ok(status["result"].clone()),
            Some("FAILED") => {
                let e = &status["error"];
                let code = e["status"].as_u64().and_then(|c| u16::try_from(c).ok()).unwrap_or(500);
                return Err(CliError::api(
                    code,
                    e["code"].as_str().unwrap_or("failed"),
                    e["message"].as_str().unwrap_or_default(),
                ));
            }
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(CliError::timed_out(format!("command {id} is still PENDING: see /v1/commands/{id}")));
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Prints the new deploy, and follows it with `--wait`.
async fn finish(s: &Session, env: &str, stage: &str, result: Value, wait: Option<WaitArgs>, verb: &str) -> Result<()> {
    let deploy: Deploy = serde_json::from_value(result.clone())
        .map_err(|e| CliError::failed(format!("unexpected answer (not a deploy): {e}")))?;
    match wait {
        Some(w) if w.wait => {
            s.out.line(&format!(
                "{verb} {} ({}) of build {} on {env}/{stage}.",
                deploy.id, deploy.deploy_type, deploy.build_id
            ));
            let ended = follow(
                &s.client,
                Follow { env, stage, deploy: Some(deploy.id.clone()), timeout: w.timeout, out: s.out },
            )
            .await?;
            if s.out.format == crate::args::OutputFormat::Json {
                s.out.json(&serde_json::to_value(&ended).unwrap_or_default());
            }
            Ok(())
        }
        _ => {
            s.out.done(
                &result,
                &format!(
                    "{verb} {} ({}) of build {} on {env}/{stage}.",
                    deploy.id, deploy.deploy_type, deploy.build_id
                ),
            );
            Ok(())
        }
    }
}

async fn status(s: &Session, env: &str, stage: &str, watch: bool, timeout: Duration) -> Result<()> {
    if watch {
        let ended = follow(&s.client, Follow { env, stage, deploy: None, timeout, out: s.out }).await?;
        if s.out.format == crate::args::OutputFormat::Json {
            s.out.json(&serde_json::to_value(&ended).unwrap_or_default());
        }
        return Ok(());
    }
    let e: Value = s.client.get(&stage_path(env, stage)).await?;
    let deploy: Value = match e["deployId"].as_str() {
        Some(_) => s.client.get(&format!("{}/deploys/current", stage_path(env, stage))).await?,
        None => Value::Null,
    };
    let json = json!({"stage": e, "deploy": deploy});
    s.out.read(&json, &["FIELD", "VALUE"], || {
        let d = &deploy;
        vec![
            vec!["stage".into(), format!("{env}/{stage} ({})", text(&e["envState"]))],
            vec!["deploy".into(), text(&d["id"])],
            vec!["type".into(), text(&d["type"])],
            vec!["state".into(), text(&d["state"])],
            vec!["build".into(), text(&d["buildId"])],
            vec![
                "progress".into(),
                format!("{}/{} done, {} failed", text(&d["successTotal"]), text(&d["total"]), text(&d["failTotal"])),
            ],
            vec!["started".into(), time(&d["startDate"])],
            vec!["by".into(), text(&d["operator"])],
            vec!["acceptance".into(), text(&d["acceptanceStatus"])],
        ]
    });
    Ok(())
}

async fn hosts(s: &Session, env: &str, stage: &str) -> Result<()> {
    let base = stage_path(env, stage);
    let agents: Value = s.client.get(&format!("{base}/agents")).await?;
    let current: Option<DeployId> =
        s.client.get::<Value>(&base).await?["deployId"].as_str().and_then(|d| DeployId::parse(d.to_string()).ok());
    // The build of each deploy the hosts name, read once each.
    let mut builds: std::collections::BTreeMap<String, String> = Default::default();
    for a in agents.as_array().into_iter().flatten() {
        let d = text(&a["deployId"]);
        if let std::collections::btree_map::Entry::Vacant(slot) = builds.entry(d) {
            let build = match s.client.get::<Value>(&format!("/v1/deploys/{}", seg(slot.key()))).await {
                Ok(deploy) => text(&deploy["buildId"]),
                Err(_) => "-".into(),
            };
            slot.insert(build);
        }
    }
    s.out.read(&agents, &["HOST", "STATE", "STEP", "STATUS", "KIND", "BUILD", "LAST REPORT", "ERROR"], || {
        agents
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let kind = serde_json::from_value::<schema::model::Agent>(a.clone()).ok().map_or("-", |r| {
                    schema::rules::host_kind::HostKind::of(
                        r.state,
                        r.status,
                        r.deploy_stage,
                        &r.deploy_id,
                        current.as_ref(),
                    )
                    .label()
                });
                let error = match a["lastErrno"].as_i64() {
                    Some(0) | None => "-".to_string(),
                    Some(n) => format!("errno {n}"),
                };
                vec![
                    text(&a["hostName"]),
                    text(&a["state"]),
                    text(&a["deployStage"]),
                    text(&a["status"]),
                    kind.to_string(),
                    builds.get(&text(&a["deployId"])).cloned().unwrap_or_default(),
                    time(&a["lastUpdateDate"]),
                    error,
                ]
            })
            .collect()
    });
    Ok(())
}

async fn history(s: &Session, env: &str, stage: &str, limit: u16) -> Result<()> {
    let e: Value = s.client.get(&stage_path(env, stage)).await?;
    let path = format!("/v1/deploys?envId={}&pageIndex=1&pageSize={limit}", seg(&text(&e["id"])));
    let page: Value = s.client.get(&path).await?;
    let deploys = page["deploys"].clone();
    s.out.read(&deploys, &["DEPLOY", "TYPE", "STATE", "BUILD", "DONE", "STARTED", "BY"], || {
        deploys
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                vec![
                    text(&d["id"]),
                    text(&d["type"]),
                    text(&d["state"]),
                    text(&d["buildId"]),
                    format!("{}/{}", text(&d["successTotal"]), text(&d["total"])),
                    time(&d["startDate"]),
                    text(&d["operator"]),
                ]
            })
            .collect()
    });
    Ok(())
}

async fn token(command: TokenCommand, s: &Session) -> Result<()> {
    match command {
        TokenCommand::Create { principal, description, expires_in_days } => {
            let mut body = json!({"principal": principal});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(days) = expires_in_days {
                body["expiresAt"] = json!(schema::time::now_ms() + i64::from(days) * 86_400_000);
            }
            let reply = s.client.write(Method::POST, "/v1/tokens", Some(&body)).await?;
            // With --quiet nothing is printed: a script that wants the secret asks for JSON.
            s.out.done(
                &reply.body,
                &format!(
                    "Token {} for {principal} (shown once, store it now):\n{}",
                    text(&reply.body["id"]),
                    text(&reply.body["token"])
                ),
            );
            Ok(())
        }
        TokenCommand::List => {
            let tokens: Value = s.client.get("/v1/tokens").await?;
            s.out.read(&tokens, &["ID", "PRINCIPAL", "KIND", "DESCRIPTION", "CREATED", "EXPIRES"], || {
                tokens
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            text(&t["id"]),
                            text(&t["principal"]),
                            text(&t["kind"]),
                            text(&t["description"]),
                            time(&t["createdAt"]),
                            time(&t["expiresAt"]),
                        ]
                    })
                    .collect()
            });
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            s.client.write(Method::DELETE, &format!("/v1/tokens/{}", seg(&id)), None).await?;
            s.out.done(&Value::Null, &format!("Token {id} revoked."));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_json_values_and_plain_strings() {
        let s = settings(&[
            "maxParallel=5".into(),
            "description=canary hosts".into(),
            "flag=true".into(),
            "q=\"5\"".into(),
        ])
        .unwrap();
        assert_eq!(Value::Object(s), json!({"maxParallel": 5, "description": "canary hosts", "flag": true, "q": "5"}));
        assert_eq!(settings(&["novalue".into()]).unwrap_err().exit, crate::exit::USAGE);
        assert_eq!(settings(&["=5".into()]).unwrap_err().exit, crate::exit::USAGE);
    }
}
