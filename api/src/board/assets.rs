//! The board's stylesheet and script, embedded in the binary and served under names that
//! carry a hash of their content, so browsers may keep them forever.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    /// `board.css`.
    name: &'static str,
    /// `board.0123abcd.css`.
    served_as: String,
    content_type: &'static str,
    body: &'static str,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    [
        ("board.css", "text/css; charset=utf-8", include_str!("assets/board.css")),
        ("board.js", "text/javascript; charset=utf-8", include_str!("assets/board.js")),
    ]
    .into_iter()
    .map(|(name, content_type, body)| {
        let hash: String = Sha256::digest(body.as_bytes()).iter().take(5).map(|b| format!("{b:02x}")).collect();
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
        Asset { name, served_as: format!("{stem}.{hash}.{ext}"), content_type, body }
    })
    .collect()
});

/// The URL of an embedded asset (its name with the content's hash).
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/assets/{}", a.served_as),
        None => format!("/assets/{name}"),
    }
}

/// `GET /assets/{file}`: an asset under its hashed name, cached for a year.
pub async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.served_as == file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn asset_names_carry_their_hash() {
        let css = super::url("board.css");
        assert!(
            css.starts_with("/assets/board.") && css.ends_with(".css") && css.len() == "/assets/board..css".len() + 10
        );
        assert_ne!(super::url("board.js"), "/assets/board.js");
    }
}
