//! The web console: a live board of the pipeline and a SQL console, as static files built into
//! the binary (no Node or build step at run time), served at `/console`.
//!
//! The page itself needs no key; everything it shows comes from the `/v1` routes, which do.
//! The files carry no version in their names, so they are served `no-cache` with an ETag: a
//! browser revalidates each load (a 304 with no body) and never runs an old script against a
//! newer API.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../console/index.html"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../console/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../console/console.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../console/favicon.svg"),
    },
];

/// Each asset's ETag, a hash of its bytes (fixed for the life of the binary).
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let mut hasher = DefaultHasher::new();
            asset.body.hash(&mut hasher);
            HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
                .expect("a hex ETag is a valid header value")
        })
        .collect()
});

/// Scripts, styles and data only from this origin, and no framing: the page holds an API key.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `GET /`: the console is this service's front page.
pub(crate) async fn root() -> Redirect {
    Redirect::temporary("/console/")
}

/// `GET /console`: the page, under a trailing slash so that its relative links resolve.
pub(crate) async fn console_bare() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/`: the page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// `GET /console/{file}`: the page's scripts, styles and icon.
pub(crate) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.name == file) {
        Some(index) => serve(index, &headers),
        None => ApiError::NotFound(format!("the console has no file {file:?}")).into_response(),
    }
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, etag.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    #[tokio::test]
    async fn files_have_their_types_a_cache_header_and_revalidate() {
        let app = axum::Router::new()
            .route("/console/", get(index))
            .route("/console/{file}", get(asset));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        for (path, content_type) in [
            ("/console/", "text/html; charset=utf-8"),
            ("/console/console.js", "text/javascript; charset=utf-8"),
            ("/console/console.css", "text/css; charset=utf-8"),
            ("/console/favicon.svg", "image/svg+xml"),
        ] {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            let etag = headers[header::ETAG].clone();
            assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
            let again = client
                .get(format!("{base}{path}"))
                .header(header::IF_NONE_MATCH, etag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304, "{path}");
        }
        let missing = client
            .get(format!("{base}/console/secrets.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }
}
