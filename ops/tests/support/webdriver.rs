//! A small W3C WebDriver client for the board's browser tests: `chromedriver` driving a
//! headless Chromium (Debian's `chromium` and `chromium-driver`), spoken to over HTTP.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session and the driver process it runs in.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts `chromedriver` on a free port and opens a headless Chromium session.
    pub async fn start() -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().unwrap().port()
        };
        let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromedriver is missing: apt-get install chromium chromium-driver (.ci/run does)");
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not start");
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--disable-extensions", "--no-first-run"]
        });
        if let Some(c) = chromium {
            options["binary"] = json!(c);
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "unhandledPromptBehavior": "ignore",
        }}});
        let answer: Value =
            http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session =
            answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {answer}")).to_string();
        Browser { driver, http, session: format!("{base}/session/{session}") }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(error) = answer["value"].get("error") {
            panic!("webdriver {method} {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    async fn try_send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer: Value = req.send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
        match answer["value"].get("error") {
            Some(e) => Err(format!("{e}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    /// Loads a URL.
    pub async fn goto(&self, url: &str) {
        self.send(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.send(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector (panics when none does).
    pub async fn find(&self, css: &str) -> Element {
        self.try_find(css).await.unwrap_or_else(|| panic!("no element matches {css:?}"))
    }

    /// The first element matching a CSS selector, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let found = self
            .try_send(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await;
        found.ok().and_then(|v| v[ELEMENT].as_str().map(|id| Element(id.to_string())))
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found =
            self.send(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found
            .as_array()
            .map(|a| a.iter().filter_map(|v| v[ELEMENT].as_str().map(|id| Element(id.to_string()))).collect())
            .unwrap_or_default()
    }

    /// Clicks an element.
    pub async fn click(&self, e: &Element) {
        self.send(reqwest::Method::POST, &format!("/element/{}/click", e.0), Some(json!({}))).await;
    }

    /// Types into an element (after clearing it).
    pub async fn fill(&self, e: &Element, text: &str) {
        self.send(reqwest::Method::POST, &format!("/element/{}/clear", e.0), Some(json!({}))).await;
        self.send(reqwest::Method::POST, &format!("/element/{}/value", e.0), Some(json!({"text": text}))).await;
    }

    /// An element's visible text.
    pub async fn text(&self, e: &Element) -> String {
        self.send(reqwest::Method::GET, &format!("/element/{}/text", e.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .into()
    }

    /// The text of the whole page.
    pub async fn page_text(&self) -> String {
        self.eval("return document.body.innerText").await.as_str().unwrap_or_default().to_string()
    }

    /// Runs a script in the page and answers what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.send(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// The text of the open `confirm()` dialog, if one is open.
    pub async fn dialog(&self) -> Option<String> {
        self.try_send(reqwest::Method::GET, "/alert/text", None).await.ok().and_then(|v| v.as_str().map(String::from))
    }

    /// Waits for a `confirm()` dialog, answers its text and accepts it.
    pub async fn accept_dialog(&self) -> String {
        for _ in 0..100 {
            if let Some(text) = self.dialog().await {
                self.send(reqwest::Method::POST, "/alert/accept", Some(json!({}))).await;
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no confirmation dialog opened");
    }

    /// Waits until a script returns `true`, failing after `deadline` with `what`.
    pub async fn wait_until(&self, what: &str, script: &str, deadline: Duration) {
        let start = std::time::Instant::now();
        while start.elapsed() < deadline {
            if self.eval(script).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("board").join("timed-out.png");
        self.screenshot(&shot).await;
        let text = self.page_text().await;
        panic!("timed out waiting for {what} (screenshot {}); the page says:\n{text}", shot.display());
    }

    /// Saves a PNG of the window.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.send(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(data.as_str().unwrap_or_default());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Resizes the window (a phone: 390 × 844).
    pub async fn resize(&self, width: u32, height: u32) {
        self.send(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Forgets the site's cookies (logs out without the form).
    pub async fn clear_cookies(&self) {
        self.send(reqwest::Method::DELETE, "/cookie", None).await;
    }

    /// A cookie's value, if the browser holds it.
    pub async fn cookie(&self, name: &str) -> Option<Value> {
        self.try_send(reqwest::Method::GET, &format!("/cookie/{name}"), None).await.ok()
    }

    /// Ends the session and the driver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
    }
}

/// Standard base64 (the screenshots' encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
}
