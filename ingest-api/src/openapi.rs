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

/// The fields of a notification that a CloudEvent carries as its `data`: the envelope gives
/// `platform` (`source`), `id`, `type` and `occurred_at` (`time`), so `data` may not repeat them.
#[derive(Deserialize, ToSchema)]
#[schema(title = "CloudEventData")]
#[allow(dead_code)]
pub(crate) struct CloudEventData {
    /// Only when the event has no `subject` (or the same value).
    #[schema(max_length = 256)]
    post_id: Option<String>,
    #[schema(max_length = 256)]
    author_id: Option<String>,
    #[schema(max_length = 256)]
    actor_id: Option<String>,
    #[schema(max_length = 32768)]
    text: Option<String>,
    #[schema(min_length = 1, max_length = 35, pattern = r"^[A-Za-z0-9_-]+$")]
    lang: Option<String>,
    #[schema(max_items = 64)]
    tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    metrics: Option<serde_json::Value>,
    /// The event's extensions (and `dataschema`) are added under `attributes.cloudevents`.
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
}

/// One CloudEvent 1.0 in structured mode (`application/cloudevents+json`). Any other member
/// is an extension (a-z and 0-9, a string, number or boolean), kept in the notification's
/// `attributes.cloudevents`.
#[derive(Deserialize, ToSchema)]
#[schema(title = "CloudEvent")]
#[allow(dead_code)]
pub(crate) struct CloudEventIn {
    #[schema(pattern = r"^1\.0$")]
    specversion: String,
    /// The notification's id; a second event with the same `source` and `id` is a duplicate.
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    /// The notification's platform, so a platform name: 1 to 64 of A-Z, a-z, 0-9, '.', '_',
    /// '-', not starting with '.'.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    source: String,
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._:/-]+$")]
    kind: String,
    /// The notification's `occurred_at`: required here.
    #[schema(format = DateTime, max_length = 64)]
    time: String,
    /// The notification's `post_id`.
    #[schema(max_length = 256)]
    subject: Option<String>,
    /// A JSON type (`application/json`) or absent.
    datacontenttype: Option<String>,
    /// Kept in `attributes.cloudevents.dataschema`.
    dataschema: Option<String>,
    data: Option<CloudEventData>,
}

/// Binary mode: the event's attributes as `ce-*` headers (percent-encoded where they hold more
/// than printable ASCII) and its `data` as an `application/json` body ([`CloudEventData`]).
/// Any other `ce-*` header is an extension, kept in `attributes.cloudevents`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct CloudEventHeaders {
    /// `1.0`; its presence makes an `application/json` request a binary-mode CloudEvent.
    #[serde(rename = "ce-specversion")]
    ce_specversion: Option<String>,
    /// The notification's id.
    #[serde(rename = "ce-id")]
    ce_id: Option<String>,
    /// The notification's platform.
    #[serde(rename = "ce-source")]
    ce_source: Option<String>,
    /// The notification's type.
    #[serde(rename = "ce-type")]
    ce_type: Option<String>,
    /// The notification's occurred_at (RFC 3339).
    #[serde(rename = "ce-time")]
    ce_time: Option<String>,
    /// The notification's post_id.
    #[serde(rename = "ce-subject")]
    ce_subject: Option<String>,
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_describes_each_cloudevents_mode() {
        let document = serde_json::to_value(super::document()).unwrap();
        let post = &document["paths"]["/v1/notifications"]["post"];
        let content = &post["requestBody"]["content"];
        for content_type in [
            "application/json",
            "application/x-ndjson",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
        ] {
            assert!(
                content.get(content_type).is_some(),
                "{content_type}: {content}"
            );
        }
        assert_eq!(
            content["application/cloudevents-batch+json"]["schema"]["type"], "array",
            "{content}"
        );
        let headers: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            [
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-time",
                "ce-subject"
            ]
        );
        let event = &document["components"]["schemas"]["CloudEventIn"];
        let required: Vec<&str> = event["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(required, ["specversion", "id", "source", "type", "time"]);
    }
}
