//! The ingest API's OpenAPI document, served at `GET /openapi.json`.
//!
//! The paths come from the handlers' own `#[utoipa::path]` attributes; the types here only
//! describe the JSON the handlers read and write by hand (bodies are parsed item by item, so a
//! bad notification costs only itself, which no derived extractor does).

use serde::Deserialize;
use sluice_auth::openapi::Bearer;
pub(crate) use sluice_auth::openapi::{ErrorBody, KeyRefusals};
use utoipa::{OpenApi, ToSchema};

/// One notification as a platform sends it.
#[derive(Deserialize, ToSchema)]
#[schema(title = "Notification")]
#[allow(dead_code)]
pub(crate) struct NotificationIn {
    /// The platform that sent it: 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-', not starting with '.'.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    platform: String,
    /// Unique within the platform; a second notification with the same id is a duplicate.
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    /// What happened, e.g. `post.created`, `post.liked`.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._:/-]+$")]
    kind: String,
    /// When it happened (RFC 3339), within the server's window around now.
    #[schema(format = DateTime, max_length = 64)]
    occurred_at: String,
    #[schema(max_length = 256)]
    post_id: Option<String>,
    #[schema(max_length = 256)]
    author_id: Option<String>,
    #[schema(max_length = 256)]
    actor_id: Option<String>,
    #[schema(max_length = 32768)]
    text: Option<String>,
    /// A language tag such as `en` or `pt-BR`.
    #[schema(min_length = 1, max_length = 35, pattern = r"^[A-Za-z0-9_-]+$")]
    lang: Option<String>,
    #[schema(max_items = 64)]
    tags: Option<Vec<String>>,
    /// Counters by name, whole numbers.
    #[schema(value_type = Option<Object>)]
    metrics: Option<serde_json::Value>,
    /// Anything else the platform keeps, as a JSON object.
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
}

/// One notification, or an array of them (NDJSON: `application/x-ndjson`, one a line).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum NotificationsBody {
    One(Box<NotificationIn>),
    Many(Vec<NotificationIn>),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice ingest API",
        description = "Platforms send notifications; each is answered once it is as safe as asked \
                       (staged, durable, replicated)."
    ),
    paths(
        crate::routes::post_notifications,
        crate::routes::get_notification,
        crate::routes::get_memory_post,
        crate::routes::stats,
        crate::routes::healthz,
        crate::routes::readyz,
        crate::admin::list,
        crate::admin::get,
        crate::admin::replay,
        openapi_json,
    ),
    components(schemas(crate::routes::IngestResponse, crate::routes::Duplicate, crate::routes::Rejected)),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
pub(crate) struct ApiDoc;

/// The document, as `/openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "probes", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
