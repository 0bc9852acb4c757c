//! Where artifacts may come from, and how they are verified.
//!
//! An allow-list entry is a parsed location (scheme, host, port and a path prefix), and a URL
//! is under it when its parsed scheme, host and port are the same and its path starts with
//! the entry's path **segments**: `https://artifacts.example.com/web/` allows
//! `https://artifacts.example.com/web/app.tgz`, never `…/webby/app.tgz`,
//! `https://artifacts.example.com.evil.org/web/app.tgz` or
//! `https://artifacts.example.com@evil.org/web/app.tgz`. Nothing here compares strings by
//! their prefix.
//!
//! URLs are parsed with the `url` crate (WHATWG URL rules), the parser `reqwest` uses: what the
//! API checks at publish and the agent checks before a download is exactly what the HTTP
//! client then connects to (hosts lower-cased and IDNA-encoded, IPv4 forms such as `0x7f.1`
//! normalised, `.`/`..` and their percent-encoded spellings resolved).
//!
//! The server applies [`ArtifactPolicy`] when a build is published; the agent applies the same
//! [`AllowedLocation`]s to the artifact URL and to every redirect ([`check_redirect`]).

use std::fmt;
use std::str::FromStr;

pub use url::Url;

/// Why an artifact URL, an allow-list entry or a redirect was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

impl Refused {
    fn new(message: impl Into<String>) -> Refused {
        Refused(message.into())
    }
}

/// A URL for messages: scheme, host, port and path, without userinfo, query or fragment (a
/// signed URL's query is a credential).
pub fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// Parses an artifact URL: `http://` or `https://` with a host, or `file://` without a host
/// (an absolute path); never with a user name or password (`https://a.example.com@evil.org/`
/// names the host `evil.org`, and credentials do not belong in a build record).
pub fn parse_artifact_url(text: &str) -> Result<Url, Refused> {
    let url = Url::parse(text.trim()).map_err(|e| Refused::new(format!("is not a valid URL ({e})")))?;
    match url.scheme() {
        "http" | "https" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(Refused::new("has no host"));
            }
        }
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) {
                return Err(Refused::new("a file:// URL must not name a host (file:///path)"));
            }
        }
        _ => return Err(Refused::new("must be an http://, https:// or file:// URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::new("must not contain a user name or password"));
    }
    Ok(url)
}

/// True when a path segment (as the URL spells it) hides a separator behind percent-encoding
/// (`%2F`, `%5C`): a server that decodes it would see another path than the one checked.
fn hides_a_separator(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase();
    s.contains("%2f") || s.contains("%5c")
}

/// The path segments of a URL (`/a/b/` gives `a`, `b`, ``).
fn segments(url: &Url) -> Vec<&str> {
    url.path_segments().map(Iterator::collect).unwrap_or_default()
}

/// One entry of the allow-list: a scheme, a host and port, and a directory. Written as a URL
/// (`https://artifacts.example.com/web/`, `http://10.0.0.5:8080/`, `file:///srv/artifacts/`);
/// the path is a directory whether or not it ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedLocation {
    scheme: String,
    host: Option<url::Host<String>>,
    port: Option<u16>,
    explicit_port: Option<u16>,
    segments: Vec<String>,
}

impl AllowedLocation {
    /// Parses an entry. Refused: another scheme than http, https or file, a user name or
    /// password, a query or fragment, an empty segment inside the path, a percent-encoded `/`
    /// or `\`.
    pub fn parse(text: &str) -> Result<AllowedLocation, Refused> {
        let shown_text: String = text.chars().take(200).collect();
        let at = |e: Refused| Refused::new(format!("{shown_text:?} {e}"));
        let url = parse_artifact_url(text).map_err(at)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(at(Refused::new("must not have a query or fragment")));
        }
        let mut segs = segments(&url);
        if segs.last() == Some(&"") {
            segs.pop();
        }
        if segs.iter().any(|s| s.is_empty()) {
            return Err(at(Refused::new("has an empty path segment (//)")));
        }
        if segs.iter().any(|s| hides_a_separator(s)) {
            return Err(at(Refused::new("has a percent-encoded / or \\ in its path")));
        }
        Ok(AllowedLocation {
            scheme: url.scheme().to_string(),
            host: url.host().map(|h| h.to_owned()).filter(|h| !matches!(h, url::Host::Domain(d) if d.is_empty())),
            port: url.port_or_known_default(),
            explicit_port: url.port(),
            segments: segs.into_iter().map(String::from).collect(),
        })
    }

    /// Parses a comma separated list of entries (blanks ignored).
    pub fn parse_list(text: &str) -> Result<Vec<AllowedLocation>, Refused> {
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(AllowedLocation::parse).collect()
    }

    /// True for a `file://` location.
    pub fn is_file(&self) -> bool {
        self.scheme == "file"
    }

    /// True when `url` is under this location: same scheme, same host (compared as parsed, so
    /// case-insensitively), same port (explicit or the scheme's default), and a path made of
    /// this location's segments followed by at least one more. A URL with a user name or a
    /// percent-encoded separator in its path is never under any location.
    pub fn allows(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let host = url.host().map(|h| h.to_owned()).filter(|h| !matches!(h, url::Host::Domain(d) if d.is_empty()));
        if host != self.host || url.port_or_known_default() != self.port {
            return false;
        }
        let segs = segments(url);
        if segs.iter().any(|s| hides_a_separator(s)) || segs.len() <= self.segments.len() {
            return false;
        }
        segs.iter().zip(&self.segments).all(|(a, b)| *a == b.as_str())
    }
}

impl FromStr for AllowedLocation {
    type Err = Refused;

    fn from_str(s: &str) -> Result<AllowedLocation, Refused> {
        AllowedLocation::parse(s)
    }
}

/// The normalised form: `https://artifacts.example.com/web/`.
impl fmt::Display for AllowedLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(h) = &self.host {
            write!(f, "{h}")?;
        }
        if let Some(p) = self.explicit_port {
            write!(f, ":{p}")?;
        }
        for s in &self.segments {
            write!(f, "/{s}")?;
        }
        f.write_str("/")
    }
}

/// True when `url` is under one of `allowed`, or `allowed` is empty (no allow-list).
pub fn is_allowed(allowed: &[AllowedLocation], url: &Url) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a.allows(url))
}

/// Whether an HTTP client may follow a redirect from `from` (the URL that answered 3xx) to
/// `to`. Only to http or https, never with a user name or password; with an allow-list, only
/// to a URL under it; without one, never from https down to http.
pub fn check_redirect(allowed: &[AllowedLocation], from: Option<&Url>, to: &Url) -> Result<(), Refused> {
    let target = shown(to);
    if !matches!(to.scheme(), "http" | "https") {
        return Err(Refused::new(format!("redirect to {target} refused: only http and https are followed")));
    }
    if !to.username().is_empty() || to.password().is_some() {
        return Err(Refused::new(format!("redirect to {target} refused: it carries a user name or password")));
    }
    if !allowed.is_empty() {
        if is_allowed(allowed, to) {
            return Ok(());
        }
        return Err(Refused::new(format!("redirect to {target} refused: not under an allowed artifact location")));
    }
    if from.is_some_and(|f| f.scheme() == "https") && to.scheme() == "http" {
        return Err(Refused::new(format!("redirect to {target} refused: from https down to http")));
    }
    Ok(())
}

/// A hex SHA-256 digest, lower-cased; `None` unless it is exactly 64 hex digits (surrounding
/// blanks ignored).
pub fn parse_sha256(text: &str) -> Option<String> {
    let d = text.trim().to_ascii_lowercase();
    (d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit())).then_some(d)
}

/// Where the expected SHA-256 of an artifact comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// A build must carry `artifactSha256` (the default).
    #[default]
    Required,
    /// A build may omit it; the agent then needs the published `<artifactUrl>.sha256`, and
    /// fails the download without it.
    Sidecar,
}

impl ChecksumPolicy {
    /// The setting's value: `required` or `sidecar`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumPolicy::Required => "required",
            ChecksumPolicy::Sidecar => "sidecar",
        }
    }
}

impl FromStr for ChecksumPolicy {
    type Err = Refused;

    fn from_str(s: &str) -> Result<ChecksumPolicy, Refused> {
        match s.trim().to_ascii_lowercase().as_str() {
            "required" => Ok(ChecksumPolicy::Required),
            "sidecar" => Ok(ChecksumPolicy::Sidecar),
            _ => Err(Refused::new(format!("{s:?} is not one of required, sidecar"))),
        }
    }
}

impl fmt::Display for ChecksumPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the server accepts as a build's artifact. The default is the strict production policy:
/// any http(s) location, no `file://`, and `artifactSha256` required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactPolicy {
    /// Locations artifacts must be under; empty: any http or https URL.
    pub allowed: Vec<AllowedLocation>,
    /// Whether `file://` URLs are accepted (default: no).
    pub allow_file: bool,
    /// Whether builds must carry their SHA-256.
    pub checksum: ChecksumPolicy,
}

impl ArtifactPolicy {
    /// Accepts any http, https or file URL and builds without a checksum: for tests and
    /// fixtures whose builds are never downloaded, never the default of a server.
    pub fn permissive() -> ArtifactPolicy {
        ArtifactPolicy { allowed: Vec::new(), allow_file: true, checksum: ChecksumPolicy::Sidecar }
    }

    /// Checks the policy itself: a `file://` entry needs `allow_file`.
    pub fn validate(&self) -> Result<(), Refused> {
        match self.allowed.iter().find(|a| a.is_file()) {
            Some(a) if !self.allow_file => {
                Err(Refused::new(format!("{a} is a file:// location, but file:// artifacts are not enabled")))
            }
            _ => Ok(()),
        }
    }

    /// Checks an artifact URL against the policy; the parsed URL when it passes.
    pub fn check_url(&self, text: &str) -> Result<Url, Refused> {
        let url = parse_artifact_url(text)?;
        if url.scheme() == "file" && !self.allow_file {
            return Err(Refused::new("file:// artifacts are not enabled on this server"));
        }
        if !is_allowed(&self.allowed, &url) {
            let list: Vec<String> = self.allowed.iter().map(ToString::to_string).collect();
            return Err(Refused::new(format!("is not under an allowed artifact location ({})", list.join(", "))));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> AllowedLocation {
        AllowedLocation::parse(s).unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn allows(location: &str, u: &str) -> bool {
        loc(location).allows(&url(u))
    }

    #[test]
    fn a_location_allows_urls_under_its_path_segments_only() {
        let web = "https://artifacts.example.com/web/";
        assert!(allows(web, "https://artifacts.example.com/web/x.tgz"));
        assert!(allows(web, "https://artifacts.example.com/web/a/b/x.tgz?sig=1"));
        assert!(!allows(web, "https://artifacts.example.com/webby/x.tgz"), "a string prefix is not a segment");
        assert!(!allows(web, "https://artifacts.example.com/web"), "the directory itself is no artifact");
        assert!(!allows(web, "https://artifacts.example.com/x.tgz"));
        assert!(!allows(web, "https://artifacts.example.com/web/../secret/x.tgz"), "dot segments are resolved");
        assert!(!allows(web, "https://artifacts.example.com/web/%2e%2e/secret/x.tgz"), "encoded dots too");
        assert!(!allows(web, "https://artifacts.example.com/web/..%2Fsecret%2Fx.tgz"), "an encoded slash");
        assert!(!allows(web, "https://artifacts.example.com/web/..%5csecret"), "an encoded backslash");
        // Without the trailing slash, the same directory.
        assert!(allows("https://artifacts.example.com/web", "https://artifacts.example.com/web/x.tgz"));
        assert!(!allows("https://artifacts.example.com/web", "https://artifacts.example.com/webby/x.tgz"));
        // The root allows the whole host.
        assert!(allows("https://artifacts.example.com", "https://artifacts.example.com/x.tgz"));
        assert!(allows("https://artifacts.example.com/", "https://artifacts.example.com/a/x.tgz"));
    }

    #[test]
    fn hosts_compare_exactly_and_without_case() {
        let web = "https://artifacts.example.com/web/";
        assert!(allows(web, "https://ARTIFACTS.Example.COM/web/x.tgz"));
        assert!(allows("https://Artifacts.example.com/web/", "https://artifacts.example.com/web/x.tgz"));
        assert!(!allows(web, "https://artifacts.example.com.evil.org/web/x.tgz"));
        assert!(!allows(web, "https://evil.org/artifacts.example.com/web/x.tgz"));
        assert!(!allows(web, "https://xartifacts.example.com/web/x.tgz"));
        assert!(!allows(web, "https://artifacts.example.com@evil.org/web/x.tgz"), "userinfo names another host");
        assert!(!allows(web, "https://user@artifacts.example.com/web/x.tgz"), "userinfo is never allowed");
        assert!(!allows(web, "http://artifacts.example.com/web/x.tgz"), "the scheme is part of the location");
        // IP addresses as parsed: 0x7f.1 is 127.0.0.1.
        assert!(allows("http://127.0.0.1:8080/a/", "http://0x7f.1:8080/a/x.tgz"));
    }

    #[test]
    fn ports_must_match_with_the_default_of_the_scheme() {
        assert!(allows("https://h.example.com/", "https://h.example.com:443/x.tgz"));
        assert!(allows("https://h.example.com:443/", "https://h.example.com/x.tgz"));
        assert!(!allows("https://h.example.com/", "https://h.example.com:8443/x.tgz"));
        assert!(allows("http://h.example.com:8080/", "http://h.example.com:8080/x.tgz"));
        assert!(!allows("http://h.example.com:8080/", "http://h.example.com/x.tgz"));
        assert_eq!(loc("HTTPS://H.example.com:8443/a/b").to_string(), "https://h.example.com:8443/a/b/");
        assert_eq!(loc("https://h.example.com:443").to_string(), "https://h.example.com/");
        assert_eq!(loc("file:///srv/artifacts").to_string(), "file:///srv/artifacts/");
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (entry, reason) in [
            ("ftp://h/a/", "http://, https:// or file://"),
            ("https://user:pw@h.example.com/", "user name or password"),
            ("https://h.example.com/a/?x=1", "query or fragment"),
            ("https://h.example.com/a//b/", "empty path segment"),
            ("https://h.example.com/a%2Fb/", "percent-encoded"),
            ("file://server/share/", "must not name a host"),
            ("artifacts.example.com/web/", "not a valid URL"),
            ("https://", "not a valid URL"),
        ] {
            let err = AllowedLocation::parse(entry).unwrap_err().to_string();
            assert!(err.contains(reason) && err.contains(entry), "{entry}: {err}");
        }
        let list = AllowedLocation::parse_list(" https://a.example.com/x/, ,http://b.example.com ").unwrap();
        assert_eq!(list.len(), 2);
        assert!(AllowedLocation::parse_list("https://a.example.com/,ftp://b").is_err());
    }

    fn policy(allowed: &[&str], allow_file: bool) -> ArtifactPolicy {
        let allowed = allowed.iter().map(|s| loc(s)).collect();
        ArtifactPolicy { allowed, allow_file, checksum: ChecksumPolicy::Required }
    }

    #[test]
    fn file_urls_need_the_setting() {
        let strict = ArtifactPolicy::default();
        assert!(strict.check_url("https://any.example.com/x.tgz").is_ok());
        assert!(strict.check_url("http://10.1.2.3:81/x.tgz").is_ok());
        let err = strict.check_url("file:///srv/x.tgz").unwrap_err().to_string();
        assert!(err.contains("file://"), "{err}");
        let open = policy(&[], true);
        assert!(open.check_url("file:///srv/x.tgz").is_ok());
        assert!(open.check_url("file://evil.org/x.tgz").is_err(), "a host in a file URL");
        // With a list, file URLs must be under a file location.
        let listed = policy(&["https://a.example.com/", "file:///srv/artifacts/"], true);
        assert!(listed.validate().is_ok());
        assert!(listed.check_url("file:///srv/artifacts/web/x.tgz").is_ok());
        assert!(listed.check_url("file:///etc/passwd").is_err());
        assert!(listed.check_url("file:///srv/artifacts/../../etc/passwd").is_err());
        let err = policy(&["file:///srv/artifacts/"], false).validate().unwrap_err().to_string();
        assert!(err.contains("file:///srv/artifacts/"), "{err}");
    }

    #[test]
    fn an_allow_list_refuses_everything_else_and_names_itself() {
        let p = policy(&["https://artifacts.example.com/web/"], false);
        assert!(p.check_url("https://artifacts.example.com/web/1.tgz").is_ok());
        let err = p.check_url("https://artifacts.example.com/webby/1.tgz").unwrap_err().to_string();
        assert!(err.contains("not under an allowed artifact location (https://artifacts.example.com/web/)"), "{err}");
        assert!(p.check_url("https://artifacts.example.com@evil.org/web/1.tgz").is_err());
        assert!(ArtifactPolicy::default().check_url("https://u:p@a.example.com/1.tgz").is_err());
        assert!(ArtifactPolicy::default().check_url("gopher://a/1").is_err());
        assert!(ArtifactPolicy::default().check_url("not a url").is_err());
    }

    #[test]
    fn redirects_stay_on_the_list_and_never_go_down_to_http() {
        let list = vec![loc("https://artifacts.example.com/web/"), loc("https://cdn.example.net/")];
        let from = url("https://artifacts.example.com/web/1.tgz");
        assert!(check_redirect(&list, Some(&from), &url("https://cdn.example.net/blob/1")).is_ok());
        assert!(check_redirect(&list, Some(&from), &url("https://artifacts.example.com/web/2.tgz")).is_ok());
        let err = check_redirect(&list, Some(&from), &url("https://evil.org/1.tgz?sig=secret")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("https://evil.org/1.tgz") && !msg.contains("secret"), "{msg}");
        assert!(check_redirect(&list, Some(&from), &url("https://artifacts.example.com/other/1")).is_err());
        // Without a list: anything http(s), but no downgrade.
        assert!(check_redirect(&[], Some(&from), &url("https://elsewhere.example.org/1")).is_ok());
        assert!(check_redirect(&[], Some(&url("http://a/1")), &url("http://b/1")).is_ok());
        let err = check_redirect(&[], Some(&from), &url("http://artifacts.example.com/web/1.tgz")).unwrap_err();
        assert!(err.to_string().contains("https down to http"), "{err}");
        assert!(check_redirect(&[], Some(&from), &url("file:///etc/passwd")).is_err());
        assert!(check_redirect(&[], Some(&from), &url("https://u:p@b.example.com/1")).is_err());
    }

    #[test]
    fn checksum_policy_and_digests_parse() {
        assert_eq!("required".parse::<ChecksumPolicy>().unwrap(), ChecksumPolicy::Required);
        assert_eq!(" Sidecar ".parse::<ChecksumPolicy>().unwrap(), ChecksumPolicy::Sidecar);
        assert!("optional".parse::<ChecksumPolicy>().unwrap_err().to_string().contains("optional"));
        assert_eq!(ChecksumPolicy::default(), ChecksumPolicy::Required);
        let d = "AB".repeat(32);
        assert_eq!(parse_sha256(&format!(" {d}\n")), Some("ab".repeat(32)));
        assert_eq!(parse_sha256(&"ab".repeat(31)), None);
        assert_eq!(parse_sha256(&"zz".repeat(32)), None);
    }

    #[test]
    fn shown_urls_drop_credentials_and_queries() {
        assert_eq!(shown(&url("https://u:p@h.example.com:8443/a/b?sig=1#f")), "https://h.example.com:8443/a/b");
        assert_eq!(shown(&url("file:///srv/a.tgz")), "file:///srv/a.tgz");
    }
}
