//! The query API's OpenAPI document, served at `GET /openapi.json`, from the handlers' own
//! `#[utoipa::path]` attributes.

use sluice_auth::openapi::Bearer;
pub(crate) use sluice_auth::openapi::{ErrorBody, KeyRefusals};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice query API",
        description = "Analysts' SQL over the replica of every notification, and posts' state and \
                       audit trail."
    ),
    paths(
        crate::routes::post_query,
        crate::routes::get_query,
        crate::board::get_board,
        crate::routes::get_post,
        crate::routes::get_post_events,
        crate::feed::get_feed,
        crate::feed::stream_feed,
        crate::routes::healthz,
        crate::routes::readyz,
        openapi_json,
    ),
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
