//! The deploy board in a real browser: headless Chromium driven over WebDriver against the
//! real server (`teletraan up`) and a fleet of simulated hosts. An operator logs in, creates a
//! stage, deploys to 50 hosts and watches the grid turn green without reloading, rolls back
//! marking the build bad, pauses and resumes; a reader sees no action and forged posts change
//! nothing. Screenshots of the main pages go to `target/tmp/board/` (with `UPDATE_DOCS=1`, the
//! stage page's also to `docs/board-stage.png`, which the README shows).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use schema::DeployStage;
use serde_json::{Value, json};
use support::webdriver::Browser;
use support::{ADMIN, AGENT, DEADLINE, Server};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::{Fleet, SimConfig, numbered_hosts};

/// Hosts of the simulated fleet.
const HOSTS: usize = 50;
/// A form token the HTTP-level checks send as cookie and field alike.
const CSRF: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn shots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("board")
}

async fn shot(b: &Browser, name: &str) {
    b.screenshot(&shots().join(format!("{name}.png"))).await;
}

/// axe-core's script (`ops/test.sh` fetches it; see `ensure_axe` in `ops/lib/services.sh`).
fn axe_core() -> &'static str {
    static AXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AXE.get_or_init(|| {
        let path = std::env::var("TELETRAAN_AXE_CORE").expect(
            "TELETRAAN_AXE_CORE names axe-core's axe.min.js: run the tests through ops/test.sh, which fetches it",
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

/// Saves a screenshot of the page and checks it with axe-core against the WCAG 2.1 A and AA
/// rules (labels, names, contrast, landmarks, ARIA): any violation fails the test.
async fn checked(b: &Browser, name: &str) {
    shot(b, name).await;
    b.eval(&format!("{}\n;return true", axe_core())).await;
    let found = b
        .eval(
            "return axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})\
             .then(r => r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' \
                 + v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' ' + (n.failureSummary || '')).join(' | ')))",
        )
        .await;
    let found: Vec<String> = serde_json::from_value(found.clone()).unwrap_or_else(|_| panic!("axe answered {found}"));
    assert!(found.is_empty(), "accessibility violations on the {name} page:\n{}", found.join("\n"));
}

/// Clicks the submit button of the form whose `action` ends with `action` (and that holds
/// `field=value`, when given) and accepts its confirmation, answering the question it asked.
async fn submit_confirmed(b: &Browser, css: &str) -> String {
    let button = b.find(css).await;
    b.click(&button).await;
    b.accept_dialog().await
}

async fn log_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/")).await;
    assert!(b.url().await.contains("/login?next="), "an anonymous visit goes to the login page: {}", b.url().await);
    let field = b.find("#token").await;
    b.fill(&field, token).await;
    b.click(&b.find("form[action='/login'] button[type=submit]").await).await;
    b.wait_until(
        "the environments page",
        "return document.querySelector('h1')?.textContent === 'Environments'",
        DEADLINE,
    )
    .await;
}

async fn stage_json(server: &Server) -> Value {
    server.api.call(reqwest::Method::GET, "/v1/envs/web/prod", None).await.json().await.unwrap()
}

/// Waits, without reloading the page, until every host's cell is green and the deploy card
/// names `build`.
async fn wait_all_done(b: &Browser, build: &str) {
    let script = format!(
        "return window.__stayed === true && document.querySelectorAll('#grid .c-done').length === {HOSTS} \
         && document.getElementById('deploy').textContent.includes('{build}') \
         && document.querySelector('#deploy progress')?.value === {HOSTS} \
         && document.getElementById('summary').textContent.includes('done: {HOSTS}')"
    );
    b.wait_until(&format!("{HOSTS} green cells for {build}"), &script, DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rolls_out_from_the_board_and_the_grid_follows_live() {
    let server = Server::start().await;
    let base = server.api.base.clone();
    let b = Browser::start().await;

    // A wrong token is refused on the login page; the admin's logs in.
    b.goto(&format!("{base}/login")).await;
    b.fill(&b.find("#token").await, "not-a-token-of-ours").await;
    b.click(&b.find("form[action='/login'] button[type=submit]").await).await;
    assert!(b.page_text().await.contains("unknown, revoked or expired token"));
    checked(&b, "login").await;
    log_in(&b, &base, ADMIN).await;

    // A new stage: a bad value shows the API's message next to its field and creates nothing.
    b.click(&b.find("a[href='/envs/new']").await).await;
    b.fill(&b.find("#env_name").await, "web").await;
    b.fill(&b.find("#stage_name").await, "prod").await;
    b.fill(&b.find("#max_parallel").await, "lots").await;
    b.click(&b.find("form[action='/envs/new'] button[type=submit]").await).await;
    let error = b.text(&b.find("#max_parallel-error").await).await;
    assert!(error.starts_with("maxParallel"), "the field's error: {error}");
    assert_eq!(
        b.eval("return document.getElementById('max_parallel').getAttribute('aria-invalid')").await,
        json!("true")
    );
    checked(&b, "new-stage-error").await;
    let missing = server.api.http.get(format!("{base}/v1/envs/web/prod")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(missing.status(), 404, "the refused form created nothing");
    b.fill(&b.find("#max_parallel").await, "10").await;
    b.click(&b.find("form[action='/envs/new'] button[type=submit]").await).await;
    b.wait_until("the new stage's page", "return location.pathname === '/envs/web/prod'", DEADLINE).await;
    assert!(b.page_text().await.contains("Stage created."));

    // The configuration: the hosts' group, a bad value refused next to its field, a secret.
    b.goto(&format!("{base}/envs/web/prod/config")).await;
    b.fill(&b.find("#groups-lines").await, "g").await;
    b.click(&b.find("form[action$='/config/groups'] button[type=submit]").await).await;
    b.wait_until(
        "the groups saved",
        "return document.querySelector('.flash.ok')?.textContent === 'Groups saved.'",
        DEADLINE,
    )
    .await;
    assert_eq!(b.text(&b.find("#groups-lines").await).await.trim(), "g");
    b.fill(&b.find("#general-maxParallel").await, "many").await;
    b.click(&b.find("form[action$='/config/general'] button[type=submit]").await).await;
    let error = b.text(&b.find("#general-maxParallel-error").await).await;
    assert!(error.starts_with("maxParallel"), "the field's error: {error}");
    assert_eq!(stage_json(&server).await["maxParallel"], 10, "the refused form changed nothing");
    b.fill(&b.find("#script-lines").await, "NO_EQUALS_SIGN").await;
    b.click(&b.find("form[action$='/config/script'] button[type=submit]").await).await;
    assert!(b.text(&b.find("#script-error").await).await.contains("NAME=value"));
    b.goto(&format!("{base}/envs/web/prod/config")).await;
    b.fill(&b.find("#secrets-lines").await, "API_KEY=s3cret-value").await;
    b.click(&b.find("form[action$='/config/secrets'] button[type=submit]").await).await;
    b.wait_until("the secret saved", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    let page = b.page_text().await;
    assert!(page.contains("API_KEY = ••••••") && !page.contains("s3cret-value"), "a secret is never shown: {page}");
    checked(&b, "config").await;

    // Builds come from CI through the API.
    let publish = |n: u32| {
        let api = &server.api;
        async move {
            api.publish(
                "web",
                &format!("https://artifacts.example.com/web-{n}.tar.gz"),
                &format!("{n}{n}{n}{n}{n}{n}{n}abc"),
                Some(UNDOWNLOADED_SHA256),
            )
            .await
        }
    };
    let (b1, b2) = (publish(1).await, publish(2).await);
    let fleet = Fleet::start(
        SimConfig {
            gateway: server.gateway.clone(),
            token: AGENT.into(),
            hosts: numbered_hosts("h", HOSTS, &["g".to_string()], &[]),
            ping_interval: Duration::from_millis(300),
            jitter: 0.2,
            ..SimConfig::default()
        }
        .stage_duration(DeployStage::Restarting, Duration::from_millis(200)),
    )
    .expect("a fleet");

    // Deploy build 1 from the board; the grid turns green as the hosts report.
    b.goto(&format!("{base}/envs/web/prod")).await;
    b.click(&b.find("#actions-title ~ details summary").await).await;
    b.click(&b.find(&format!("#build_id option[value='{}']", b1.id)).await).await;
    let asked = submit_confirmed(&b, "form[action='/envs/web/prod/deploy'] button[type=submit]").await;
    assert!(asked.contains("Deploy this build to web/prod"), "the confirmation states the effect: {asked}");
    b.wait_until("the deploy's flash", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    b.eval("window.__stayed = true; return true").await;
    wait_all_done(&b, b1.id.as_str()).await;
    checked(&b, "stage").await;
    let d_first = stage_json(&server).await["deployId"].as_str().unwrap_or_default().to_string();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/board-stage.png");
        std::fs::copy(shots().join("stage.png"), docs).unwrap();
    }

    // Build 2, then a rollback that marks it bad.
    b.click(&b.find("#actions-title ~ details summary").await).await;
    b.click(&b.find(&format!("#build_id option[value='{}']", b2.id)).await).await;
    submit_confirmed(&b, "form[action='/envs/web/prod/deploy'] button[type=submit]").await;
    b.wait_until("the page after the deploy", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    b.eval("window.__stayed = true; return true").await;
    wait_all_done(&b, b2.id.as_str()).await;
    b.click(&b.find("details:has(form input[value=ROLLBACK]) summary").await).await;
    b.click(&b.find("input[name=mark_bad]").await).await;
    let asked = submit_confirmed(&b, "form:has(input[value=ROLLBACK]) button[type=submit]").await;
    assert!(asked.contains("Roll web/prod back"), "{asked}");
    b.wait_until(
        "the rollback's flash",
        "return document.querySelector('.flash.ok')?.textContent.includes('marked bad') === true",
        DEADLINE,
    )
    .await;
    b.eval("window.__stayed = true; return true").await;
    wait_all_done(&b, b1.id.as_str()).await;
    assert!(b.text(&b.find("#deploy").await).await.contains("ROLLBACK"));
    let tag: Value =
        server.api.call(reqwest::Method::GET, &format!("/v1/builds/{}/tag", b2.id), None).await.json().await.unwrap();
    assert_eq!(tag["value"], "BAD_BUILD", "the rollback marked build 2 bad: {tag}");

    // Pause and resume.
    let asked = submit_confirmed(&b, "form:has(input[value=PAUSE]) button[type=submit]").await;
    assert!(asked.starts_with("Pause web/prod?"), "{asked}");
    b.wait_until(
        "the pause",
        "return document.querySelector('.flash.ok')?.textContent.includes('paused') === true",
        DEADLINE,
    )
    .await;
    assert_eq!(stage_json(&server).await["envState"], "PAUSED");
    submit_confirmed(&b, "form:has(input[value=RESUME]) button[type=submit]").await;
    b.wait_until(
        "the resume",
        "return document.querySelector('.flash.ok')?.textContent.includes('resumed') === true",
        DEADLINE,
    )
    .await;
    assert_eq!(stage_json(&server).await["envState"], "NORMAL");

    // Restart: every host runs the current build's deploy again, and the grid follows.
    let asked = submit_confirmed(&b, "form:has(input[value=RESTART]) button[type=submit]").await;
    assert!(asked.starts_with("Restart web/prod?"), "{asked}");
    b.wait_until("the restart's flash", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    b.eval("window.__stayed = true; return true").await;
    wait_all_done(&b, b1.id.as_str()).await;
    assert!(b.text(&b.find("#deploy").await).await.contains("RESTART"));

    // A host's page, and a host action: pause it, then resume it.
    b.goto(&format!("{base}/envs/web/prod/hosts/h-01")).await;
    assert!(b.page_text().await.contains("h-01 on web/prod"));
    checked(&b, "host").await;
    let host_state = || async {
        let agents = server.api.agents("web", "prod").await;
        agents.iter().find(|a| a.host_name.as_str() == "h-01").map(|a| a.state.to_string()).unwrap_or_default()
    };
    let asked = submit_confirmed(&b, "form:has(input[value=PAUSED_BY_USER]) button[type=submit]").await;
    assert!(asked.starts_with("Pause this host?"), "{asked}");
    b.wait_until("the host's pause", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    support::wait_for("h-01 paused", || async { host_state().await == "PAUSED_BY_USER" }).await;
    submit_confirmed(&b, "form:has(input[value=NORMAL]) button[type=submit]").await;
    b.wait_until("the host's resume", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    support::wait_for("h-01 resumed", || async { host_state().await == "NORMAL" }).await;

    // The rollback's verdict undone from the builds page.
    b.goto(&format!("{base}/builds?name=web")).await;
    let good = format!("form[action='/builds/{}/verdict']:has(input[value=GOOD_BUILD]) button", b2.id);
    let asked = submit_confirmed(&b, &good).await;
    assert!(asked.starts_with(&format!("Mark build {} good?", b2.id)), "{asked}");
    b.wait_until("the verdict", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    let tag: Value =
        server.api.call(reqwest::Method::GET, &format!("/v1/builds/{}/tag", b2.id), None).await.json().await.unwrap();
    assert_eq!(tag["value"], "GOOD_BUILD", "{tag}");

    // Promote: build 2 reaches a canary stage (no hosts) through the API; prod promotes it
    // from the board.
    server.api.call(reqwest::Method::POST, "/v1/envs", Some(json!({"envName": "web", "stageName": "canary"}))).await;
    server.api.deploy("web", "canary", &b2).await;
    b.goto(&format!("{base}/envs/web/prod")).await;
    b.click(&b.find("details:has(#from_deploy_id) summary").await).await;
    b.click(&b.find("#from_deploy_id option").await).await;
    let asked = submit_confirmed(&b, "form:has(#from_deploy_id) button[type=submit]").await;
    assert!(asked.starts_with("Promote to web/prod?"), "{asked}");
    b.wait_until("the promote's flash", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    b.eval("window.__stayed = true; return true").await;
    wait_all_done(&b, b2.id.as_str()).await;
    let current = stage_json(&server).await["deployId"].as_str().unwrap_or_default().to_string();
    let promoted = server.api.deploy_by_id(&current).await;
    assert_eq!(promoted.build_id, b2.id, "prod runs the canary's build");
    assert!(promoted.from_deploy_id.is_some(), "the deploy names the one it was promoted from: {promoted:?}");

    // The deploy's timeline of host steps, and a host's deploy history.
    b.goto(&format!("{base}/deploys/{current}")).await;
    let page = b.page_text().await;
    assert!(page.contains(&format!("{HOSTS} hosts took part")), "{page}");
    let steps = b.find_all("#timeline ~ div ol.steps").await;
    assert_eq!(steps.len(), HOSTS, "one line of steps per host");
    let first = b.text(&steps[0]).await;
    // Steps shorter than a ping may go unreported; the admission and the end never do.
    for step in ["PRE_DOWNLOAD UNKNOWN", "SERVING_BUILD SUCCEEDED"] {
        assert!(first.contains(step), "the host's steps include {step}: {first}");
    }
    assert!(first.find("PRE_DOWNLOAD") < first.find("SERVING_BUILD"), "in order: {first}");
    checked(&b, "deploy").await;
    b.goto(&format!("{base}/envs/web/prod/hosts/h-01")).await;
    let page = b.page_text().await;
    for d in [&current, &d_first] {
        assert!(page.contains(d.as_str()), "the host's history lists deploy {d}: {page}");
    }

    // The other main pages.
    b.goto(&format!("{base}/envs/web/prod/deploys")).await;
    assert!(b.page_text().await.contains("ROLLBACK"));
    checked(&b, "deploys").await;
    b.goto(&format!("{base}/builds?name=web")).await;
    assert!(b.page_text().await.contains("GOOD_BUILD"));
    checked(&b, "builds").await;
    b.goto(&format!("{base}/?q=prod")).await;
    assert!(b.page_text().await.contains("web/prod"));
    checked(&b, "environments").await;
    b.goto(&format!("{base}/history?env=web&stage=prod")).await;
    checked(&b, "history").await;

    // Access: the admin grants a role through the board; a script token is shown once.
    b.goto(&format!("{base}/envs/web/access")).await;
    b.fill(&b.find("#user_roles-name").await, "admin").await;
    b.click(&b.find("form[action$='/access/user_roles'] button[type=submit]").await).await;
    b.wait_until("the grant", "return document.querySelector('.flash.ok') !== null", DEADLINE).await;
    b.fill(&b.find("#token_roles-name").await, "ci").await;
    b.click(&b.find("form[action$='/access/token_roles'] button[type=submit]").await).await;
    b.wait_until("the script token", "return document.querySelector('section.flash pre') !== null", DEADLINE).await;
    let token = b.text(&b.find("section.flash pre").await).await;
    let me = server.api.http.get(format!("{base}/v1/me")).bearer_auth(token.trim()).send().await.unwrap();
    assert_eq!(me.status(), 200, "the token shown works");
    checked(&b, "access").await;

    // A phone-sized window still shows the grid.
    b.resize(390, 844).await;
    b.goto(&format!("{base}/envs/web/prod")).await;
    assert_eq!(b.find_all("#grid .cell").await.len(), HOSTS);
    checked(&b, "stage-phone").await;

    b.quit().await;
    fleet.stop().await;
    server.stop().await;
}

/// A form body.
fn urlencoded(form: &[(&str, &str)]) -> String {
    let encode = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// A form post with the given session cookies, not following the redirect.
async fn post_form(
    base: &str,
    path: &str,
    token: &str,
    csrf_cookie: &str,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> reqwest::Response {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut req = client
        .post(format!("{base}{path}"))
        .header("Cookie", format!("tt_token={token}; tt_csrf={csrf_cookie}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(urlencoded(form));
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_no_actions_and_forged_or_bad_posts_change_nothing() {
    let server = Server::start().await;
    let base = server.api.base.clone();
    server.api.stage("web", "prod", "g", json!({})).await;
    let build = server
        .api
        .publish("web", "https://artifacts.example.com/web-1.tar.gz", "1111111abc", Some(UNDOWNLOADED_SHA256))
        .await;
    let deploy = server.api.deploy("web", "prod", &build).await;
    server.api.call(reqwest::Method::POST, "/v1/principals", Some(json!({"name": "rita"}))).await;
    server
        .api
        .call(reqwest::Method::POST, "/v1/envs/web/user_roles", Some(json!({"name": "rita", "role": "READER"})))
        .await;
    let made: Value = server
        .api
        .call(reqwest::Method::POST, "/v1/tokens", Some(json!({"principal": "rita", "description": "board"})))
        .await
        .json()
        .await
        .unwrap();
    let reader = made["token"].as_str().unwrap().to_string();

    // The reader sees the stage and no action.
    let b = Browser::start().await;
    log_in(&b, &base, &reader).await;
    b.goto(&format!("{base}/envs/web/access")).await;
    assert!(b.page_text().await.contains("rita"), "the reader's grant is listed");
    assert!(b.try_find("form[action$='/access/user_roles']").await.is_none(), "a reader may not change access");
    b.goto(&format!("{base}/envs/web/prod/config")).await;
    assert!(b.try_find("form[action$='/config/general'] button").await.is_none(), "a reader may not save");
    b.goto(&format!("{base}/envs/web/prod")).await;
    assert!(b.try_find("#read-only").await.is_some(), "the page says why there are no actions");
    for css in [".actions", "form[action$='/action']", "form[action$='/deploy']", "a[href='/envs/new']"] {
        assert!(b.try_find(css).await.is_none(), "a reader sees no {css}");
    }
    assert!(b.page_text().await.contains(build.id.as_str()));
    shot(&b, "stage-reader").await;
    // Logging out forgets the token: the next page asks to log in again.
    b.click(&b.find("form.logout button").await).await;
    b.wait_until("the login page", "return location.pathname === '/login'", DEADLINE).await;
    b.goto(&format!("{base}/envs/web/prod")).await;
    assert!(b.url().await.contains("/login?next="), "logged out: {}", b.url().await);
    b.quit().await;

    // A reader's post, with a good form token, is refused with the API's message.
    let paused = [("csrf", CSRF), ("confirmed", "1"), ("action", "PAUSE")];
    let refused = post_form(&base, "/envs/web/prod/action", &reader, CSRF, &paused, None).await;
    assert_eq!(refused.status(), 403);
    let text = refused.text().await.unwrap();
    assert!(text.contains("rita needs the OPERATOR role on environment web"), "{text}");
    // The admin's session without the form's token, or from another site, is refused too.
    let forged = [("csrf", "f".repeat(64)), ("confirmed", "1".into()), ("action", "PAUSE".into())];
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(post_form(&base, "/envs/web/prod/action", ADMIN, CSRF, &forged, None).await.status(), 403);
    let no_token = [("confirmed", "1"), ("action", "PAUSE")];
    assert_eq!(post_form(&base, "/envs/web/prod/action", ADMIN, CSRF, &no_token, None).await.status(), 403);
    let other_site =
        post_form(&base, "/envs/web/prod/action", ADMIN, CSRF, &paused, Some("https://evil.example")).await;
    assert_eq!(other_site.status(), 403);
    assert_eq!(stage_json(&server).await["envState"], "NORMAL", "no forged post paused the stage");

    // Bad input through each form: the API's message, and nothing changes.
    let bad_build = [("csrf", CSRF), ("confirmed", "1"), ("build_id", "no-such-build")];
    let answer = post_form(&base, "/envs/web/prod/deploy", ADMIN, CSRF, &bad_build, None).await;
    assert_eq!(answer.status(), 303, "back to the stage page with the message");
    let flash = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tt_flash=e"));
    assert!(flash.is_some(), "the refusal is shown on the next page");
    let current: Value =
        server.api.call(reqwest::Method::GET, "/v1/envs/web/prod/deploys/current", None).await.json().await.unwrap();
    assert_eq!(current["id"], deploy.id.as_str(), "the current deploy is unchanged");
    let bad_action = [("csrf", CSRF), ("confirmed", "1"), ("action", "EXPLODE")];
    let answer = post_form(&base, "/envs/web/prod/action", ADMIN, CSRF, &bad_action, None).await;
    assert_eq!(answer.status(), 400);
    let bad_stage = [("csrf", CSRF), ("env_name", "a b"), ("stage_name", "prod")];
    let answer = post_form(&base, "/envs/new", ADMIN, CSRF, &bad_stage, None).await;
    assert_eq!(answer.status(), 400);
    let page = answer.text().await.unwrap();
    assert!(page.contains("id=\"env_name-error\""), "the error is next to its field: {page}");
    let bad_host = [("csrf", CSRF), ("confirmed", "1"), ("state", "EXPLODED")];
    let answer = post_form(&base, "/envs/web/prod/hosts/h-01/action", ADMIN, CSRF, &bad_host, None).await;
    assert_eq!(answer.status(), 400);
    let bad_verdict = [("csrf", CSRF), ("confirmed", "1"), ("value", "SO_SO")];
    let answer = post_form(&base, &format!("/builds/{}/verdict", build.id), ADMIN, CSRF, &bad_verdict, None).await;
    assert_eq!(answer.status(), 400);
    let tag =
        server.api.http.get(format!("{base}/v1/builds/{}/tag", build.id)).bearer_auth(ADMIN).send().await.unwrap();
    let tag: Value = tag.json().await.unwrap_or(Value::Null);
    assert!(tag.is_null() || tag["value"] != "BAD_BUILD", "no verdict was recorded: {tag}");
    let bad_login = [("csrf", CSRF), ("token", "nope nope")];
    assert_eq!(post_form(&base, "/login", "", CSRF, &bad_login, None).await.status(), 401);
    server.stop().await;
}
