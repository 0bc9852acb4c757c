//! The page shell and the small pieces every page uses: navigation, the flash message,
//! times, states as badges.

use axum::response::Html;
use maud::{DOCTYPE, Markup, html};
use schema::time::EpochMs;

use super::Viewer;
use super::assets;

/// The outcome of the previous action, shown once at the top of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// Whether it went wrong.
    pub error: bool,
    /// What to say.
    pub message: String,
}

impl Flash {
    /// A success.
    pub fn ok(message: impl Into<String>) -> Flash {
        Flash { error: false, message: message.into() }
    }

    /// A refusal or a failure.
    pub fn error(message: impl Into<String>) -> Flash {
        Flash { error: true, message: message.into() }
    }

    /// As a cookie value.
    pub fn encode(&self) -> String {
        let msg: String = self.message.chars().take(600).collect();
        format!("{}{}", if self.error { 'e' } else { 'o' }, super::forward::encode(&msg))
    }

    /// From a cookie value.
    pub fn decode(v: &str) -> Option<Flash> {
        let (kind, rest) = v.split_at_checked(1)?;
        let bytes = percent_decode(rest)?;
        let message = String::from_utf8(bytes).ok()?;
        match kind {
            "e" => Some(Flash::error(message)),
            "o" => Some(Flash::ok(message)),
            _ => None,
        }
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// The flash message, if any, as an alert.
pub fn flash(f: Option<&Flash>) -> Markup {
    html! {
        @if let Some(f) = f {
            p.flash.error[f.error].ok[!f.error] role=(if f.error { "alert" } else { "status" }) { (f.message) }
        }
    }
}

/// A page without navigation (login, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Teletraan" }
                link rel="stylesheet" href=(assets::url("board.css"));
                script src=(assets::url("board.js")) defer {}
            }
            body { (body) }
        }
    };
    Html(page.into_string())
}

/// A page with the navigation bar and the viewer's name.
pub fn page(title: &str, viewer: &Viewer, flash_message: Option<&Flash>, body: Markup) -> Html<String> {
    bare(
        title,
        html! {
            a.skip href="#main" { "Skip to content" }
            header.top {
                nav aria-label="Main" {
                    a.brand href="/" { "Teletraan" }
                    a href="/" { "Environments" }
                    a href="/builds" { "Builds" }
                    a href="/history" { "History" }
                }
                form.logout method="post" action="/logout" {
                    span.who { (viewer.principal.name) }
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button.link type="submit" { "Log out" }
                }
            }
            main #main {
                (flash(flash_message))
                (body)
            }
        },
    )
}

/// A time as people read it (UTC), in a `<time>` element; "—" for none.
pub fn time(at: Option<EpochMs>) -> Markup {
    html! {
        @match at {
            Some(at) if at > 0 => {
                @let text = schema::time::format_utc(at);
                time datetime=(text) { (text.replace('T', " ").trim_end_matches('Z')) " UTC" }
            }
            _ => { "—" }
        }
    }
}

/// A time of day (UTC) in a `<time>` element whose title is the full date: for timelines.
pub fn clock(at: EpochMs) -> Markup {
    let text = schema::time::format_utc(at);
    let day_time = text.split_once('T').map_or(text.as_str(), |(_, t)| t).trim_end_matches('Z');
    html! { time datetime=(text) title=(text) { (day_time) } }
}

/// A state as a coloured badge (the colour says the kind, the text says the state).
pub fn badge(state: &str) -> Markup {
    let kind = match state {
        "SUCCEEDING" | "SUCCEEDED" | "ACCEPTED" | "NORMAL" | "SERVING_BUILD" => "good",
        "FAILING" | "ABORTED" | "REJECTED" | "BAD_BUILD" | "PAUSED_BY_SYSTEM" => "bad",
        "RUNNING" => "busy",
        _ => "plain",
    };
    html! { span class=(format!("badge {kind}")) { (state) } }
}

/// A hidden form field with the CSRF token.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

#[cfg(test)]
mod tests {
    use super::Flash;

    #[test]
    fn flash_messages_survive_their_cookie() {
        for f in [Flash::ok("Deploy started: 4 hosts"), Flash::error("ALICE needs the OPERATOR role; é ; =")] {
            let back = Flash::decode(&f.encode()).unwrap();
            assert_eq!(back, f);
        }
        assert_eq!(Flash::decode("x%41"), None);
        assert_eq!(Flash::decode("e%4"), None);
        assert_eq!(Flash::decode(""), None);
    }
}
