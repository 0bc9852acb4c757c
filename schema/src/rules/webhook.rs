//! What a webhook sends: Teletraan's placeholders substituted in url, headers and body, and the
//! header string `k1:v1;k2:v2` parsed — after substitution (Teletraan parsed the raw string, so
//! placeholders in headers were sent as they were written).

use crate::model::{HookHeader, HookRequest, WebHook};
use crate::time::EpochMs;
use crate::{DeployState, DeployType};

/// At most this many headers per hook.
pub const MAX_HEADERS: usize = 50;

/// Header names the worker sets itself: a hook may not forge or break them.
const RESERVED_HEADERS: [&str; 11] = [
    "content-length",
    "transfer-encoding",
    // Where the request goes is the url's business, and the connection is the client's.
    "host",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "expect",
];
/// Prefix of the worker's own headers (delivery id, timestamp, signature).
const RESERVED_PREFIX: &str = "x-teletraan-";

/// The facts behind the placeholders of one deploy's hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookVars {
    /// `$TELETRAAN_DEPLOY_ID`.
    pub deploy_id: String,
    /// `$TELETRAAN_DEPLOY_START`, epoch milliseconds.
    pub deploy_start: EpochMs,
    /// `$TELETRAAN_NUMERIC_DEPLOY_STATE` (see [`numeric_state`]).
    pub state: DeployState,
    /// `$TELETRAAN_DEPLOY_TYPE`.
    pub deploy_type: DeployType,
    /// `$TELETRAAN_ENV_NAME`.
    pub env_name: String,
    /// `$TELETRAAN_STAGE_NAME`.
    pub stage_name: String,
    /// `$TELETRAAN_BUILD_ID`.
    pub build_id: String,
    /// `$TELETRAAN_COMMIT` (the full commit).
    pub commit: String,
    /// `$TELETRAAN_OPERATOR`.
    pub operator: String,
}

impl HookVars {
    /// Plausible values, to check a hook when it is configured as the worker will see it.
    pub fn sample() -> HookVars {
        HookVars {
            deploy_id: "SAMPLEdeployId0123456A".into(),
            deploy_start: 1_700_000_000_000,
            state: DeployState::Running,
            deploy_type: DeployType::Regular,
            env_name: "env".into(),
            stage_name: "stage".into(),
            build_id: "SAMPLEbuildId012345678_abcdef1".into(),
            commit: "abcdef1234567890".into(),
            operator: "operator".into(),
        }
    }

    /// Every placeholder with its value.
    pub fn table(&self) -> [(&'static str, String); 9] {
        [
            ("$TELETRAAN_DEPLOY_ID", self.deploy_id.clone()),
            ("$TELETRAAN_DEPLOY_START", self.deploy_start.to_string()),
            ("$TELETRAAN_NUMERIC_DEPLOY_STATE", numeric_state(self.state).to_string()),
            ("$TELETRAAN_DEPLOY_TYPE", self.deploy_type.as_str().to_string()),
            ("$TELETRAAN_ENV_NAME", self.env_name.clone()),
            ("$TELETRAAN_STAGE_NAME", self.stage_name.clone()),
            ("$TELETRAAN_BUILD_ID", self.build_id.clone()),
            ("$TELETRAAN_COMMIT", self.commit.clone()),
            ("$TELETRAAN_OPERATOR", self.operator.clone()),
        ]
    }
}

/// Teletraan's `$TELETRAAN_NUMERIC_DEPLOY_STATE`: the ordinal of the state in its enumeration.
pub const fn numeric_state(s: DeployState) -> u8 {
    match s {
        DeployState::Running => 0,
        DeployState::Failing => 1,
        DeployState::Succeeding => 2,
        DeployState::Succeeded => 3,
        DeployState::Aborted => 4,
    }
}

/// Replaces every placeholder of `vars` in `template`.
pub fn substitute(template: &str, vars: &HookVars) -> String {
    let table = vars.table();
    let pairs: Vec<(&str, &str)> = table.iter().map(|(n, v)| (*n, v.as_str())).collect();
    substitute_with(template, &pairs)
}

/// Replaces placeholders (`(name, value)`, names starting with `$`) in one left-to-right pass.
/// Where several names match, the longest wins, so a name that extends another is never cut
/// short; values are not scanned again, so a value holding a placeholder stays as it is. A
/// `$` that starts no known name (`$TELETRAAN_X`, `$5`) is kept.
pub fn substitute_with(template: &str, vars: &[(&str, &str)]) -> String {
    let mut names: Vec<&(&str, &str)> = vars.iter().filter(|(n, _)| !n.is_empty()).collect();
    names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        match names.iter().find(|(n, _)| tail.starts_with(n)) {
            Some((n, v)) => {
                out.push_str(v);
                rest = &tail[n.len()..];
            }
            None => {
                out.push('$');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks a URL enough to refuse what can never be sent: `http(s)://` and a host, no spaces
/// or control characters. (The worker parses it fully before sending.)
pub fn check_url(url: &str) -> Result<(), String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return Err("must start with http:// or https://".into());
    };
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("must not contain spaces or control characters; found {c:?}"));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err("has no host".into());
    }
    Ok(())
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Parses Teletraan's header string `k1:v1;k2:v2` (empty parts skipped; a value may hold `:`,
/// not `;`). Names must be RFC 7230 tokens, values free of CR, LF and other control characters
/// but tab; at most [`MAX_HEADERS`]; the worker's own headers are refused.
pub fn parse_headers(s: &str) -> Result<Vec<HookHeader>, String> {
    let mut out = Vec::new();
    for part in s.split(';') {
        if part.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = part.split_once(':') else {
            return Err(format!("{:?} is not name:value", part.trim()));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(format!("{:?} has no name", part.trim()));
        }
        if let Some(c) = name.chars().find(|c| !token_char(*c)) {
            return Err(format!("header name {name:?} may not contain {c:?}"));
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(RESERVED_PREFIX) || RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!("header {name} is set by the worker"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(format!("the value of header {name} contains a control character (CR, LF…)"));
        }
        out.push(HookHeader { name: name.to_string(), value: value.to_string() });
        if out.len() > MAX_HEADERS {
            return Err(format!("at most {MAX_HEADERS} headers"));
        }
    }
    Ok(out)
}

/// The request of one hook for one deploy: url, headers and body substituted alike, headers
/// parsed after substitution. An error names the part (`url: …`, `headers: …`).
pub fn render(hook: &WebHook, vars: &HookVars) -> Result<HookRequest, String> {
    let url = substitute(&hook.url, vars);
    check_url(&url).map_err(|e| format!("url: {e}"))?;
    let headers = match &hook.headers {
        Some(h) => parse_headers(&substitute(h, vars)).map_err(|e| format!("headers: {e}"))?,
        None => Vec::new(),
    };
    Ok(HookRequest { method: hook.method, url, headers, body: hook.body.as_ref().map(|b| substitute(b, vars)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HookMethod;

    fn vars() -> HookVars {
        HookVars {
            deploy_id: "D1".into(),
            deploy_start: 1_700_000_000_123,
            state: DeployState::Succeeding,
            deploy_type: DeployType::Rollback,
            env_name: "web".into(),
            stage_name: "prod".into(),
            build_id: "B1_abcdef1".into(),
            commit: "abcdef1234".into(),
            operator: "alice".into(),
        }
    }

    #[test]
    fn every_variable_is_substituted() {
        let cases = [
            ("$TELETRAAN_DEPLOY_ID", "D1"),
            ("$TELETRAAN_DEPLOY_START", "1700000000123"),
            ("$TELETRAAN_NUMERIC_DEPLOY_STATE", "2"),
            ("$TELETRAAN_DEPLOY_TYPE", "ROLLBACK"),
            ("$TELETRAAN_ENV_NAME", "web"),
            ("$TELETRAAN_STAGE_NAME", "prod"),
            ("$TELETRAAN_BUILD_ID", "B1_abcdef1"),
            ("$TELETRAAN_COMMIT", "abcdef1234"),
            ("$TELETRAAN_OPERATOR", "alice"),
        ];
        assert_eq!(cases.len(), vars().table().len(), "every variable has a case");
        for (name, value) in cases {
            assert_eq!(substitute(&format!("<{name}>"), &vars()), format!("<{value}>"), "{name}");
        }
        assert_eq!(
            substitute("$TELETRAAN_ENV_NAME/$TELETRAAN_STAGE_NAME@$TELETRAAN_DEPLOY_ID$TELETRAAN_DEPLOY_ID", &vars()),
            "web/prod@D1D1"
        );
    }

    #[test]
    fn numeric_states_are_teletraans_ordinals() {
        let got: Vec<u8> = DeployState::ALL.iter().map(|s| numeric_state(*s)).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(DeployState::ALL[0], DeployState::Running);
        assert_eq!(DeployState::ALL[4], DeployState::Aborted);
    }

    #[test]
    fn the_longest_name_wins_whatever_the_order_given() {
        let vars = [("$A", "short"), ("$AB", "long")];
        assert_eq!(substitute_with("$AB $A $ABC", &vars), "long short longC");
        let reversed = [("$AB", "long"), ("$A", "short")];
        assert_eq!(substitute_with("$AB $A", &reversed), "long short");
    }

    #[test]
    fn unknown_placeholders_and_lone_dollars_are_left_as_they_are() {
        assert_eq!(substitute("$TELETRAAN_X $TELETRAAN_ $5 $", &vars()), "$TELETRAAN_X $TELETRAAN_ $5 $");
        assert_eq!(substitute("no placeholder", &vars()), "no placeholder");
    }

    #[test]
    fn values_are_not_substituted_again() {
        let mut v = vars();
        v.operator = "$TELETRAAN_DEPLOY_ID".into();
        assert_eq!(substitute("$TELETRAAN_OPERATOR", &v), "$TELETRAAN_DEPLOY_ID");
    }

    #[test]
    fn headers_are_parsed_after_substitution() {
        let hook = WebHook {
            method: HookMethod::Put,
            url: "https://h/$TELETRAAN_ENV_NAME?d=$TELETRAAN_DEPLOY_ID".into(),
            version: None,
            headers: Some("X-$TELETRAAN_STAGE_NAME: $TELETRAAN_DEPLOY_ID ; Authorization:Bearer a:b;".into()),
            body: Some(r#"{"state":$TELETRAAN_NUMERIC_DEPLOY_STATE,"by":"$TELETRAAN_OPERATOR"}"#.into()),
        };
        let r = render(&hook, &vars()).unwrap();
        assert_eq!(r.url, "https://h/web?d=D1");
        assert_eq!(
            r.headers,
            [
                HookHeader { name: "X-prod".into(), value: "D1".into() },
                HookHeader { name: "Authorization".into(), value: "Bearer a:b".into() },
            ]
        );
        assert_eq!(r.body.as_deref(), Some(r#"{"state":2,"by":"alice"}"#));
        assert_eq!(r.method, HookMethod::Put);
    }

    #[test]
    fn a_substituted_value_that_breaks_a_header_is_an_error() {
        let mut v = vars();
        v.operator = "eve\r\nX-Evil: 1".into();
        let hook = WebHook {
            method: HookMethod::Post,
            url: "https://h".into(),
            version: None,
            headers: Some("X-By:$TELETRAAN_OPERATOR".into()),
            body: None,
        };
        let err = render(&hook, &v).unwrap_err();
        assert!(err.starts_with("headers: "), "{err}");
    }

    #[test]
    fn header_strings_are_refused_with_a_reason() {
        assert!(parse_headers("").unwrap().is_empty());
        assert!(parse_headers(" ; ;").unwrap().is_empty());
        assert!(parse_headers("a").unwrap_err().contains("name:value"));
        assert!(parse_headers(":v").unwrap_err().contains("no name"));
        assert!(parse_headers("a b:v").unwrap_err().contains("may not contain"));
        assert!(parse_headers("a:v\u{1}").unwrap_err().contains("control"));
        assert!(parse_headers("x-teletraan-delivery:1").unwrap_err().contains("set by the worker"));
        assert!(parse_headers("Content-Length:5").unwrap_err().contains("set by the worker"));
        assert!(parse_headers("Host:metadata.internal").unwrap_err().contains("set by the worker"));
        assert!(parse_headers("connection:close").unwrap_err().contains("set by the worker"));
        assert_eq!(parse_headers("a:\tb").unwrap()[0].value, "b", "values are trimmed");
        let many: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("h{i}:v")).collect();
        assert!(parse_headers(&many.join(";")).unwrap_err().contains("at most"));
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(check_url("https://h.example.com/x?y=1").is_ok());
        assert!(check_url("HTTP://h").is_ok());
        assert!(check_url("ftp://h").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("https:///path").is_err());
        assert!(check_url("https://h/a b").is_err());
        assert!(check_url("http").is_err());
    }
}
