//! The ingest API's errors and the one place they become HTTP answers.
//!
//! 4xx answers say exactly what was wrong with the request. 5xx answers never carry
//! internals: those go to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What a 503 tells the client to wait before it retries.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Shared memory is full of notifications that are not durable yet.
    #[error(
        "shared memory is full ({used} of {budget} bytes hold notifications not yet stored); \
         retry after {RETRY_AFTER_SECS} s"
    )]
    MemoryFull { used: usize, budget: usize },
    /// Temporarily unable to answer; the request may be retried as it is.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The store refused a batch holding the request's notifications for good; the message
    /// says where they are kept. A server fault, not the client's, so a 5xx that says why.
    #[error("{0}")]
    Refused(String),
    /// No key, an unknown key, or a key whose scope does not cover the call.
    #[error(transparent)]
    Auth(#[from] sluice_auth::AuthError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MemoryFull { .. } | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) | ApiError::Refused(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Auth(error) => error.status(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Auth(error) = self {
            return error.into_response();
        }
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(detail, "internal error");
                "internal error; the details are in the server's log".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(
                "the body is larger than this server accepts (see --max-body-bytes)".to_string(),
            ),
            status if status.is_client_error() => ApiError::BadRequest(rejection.body_text()),
            _ => ApiError::Internal(rejection.body_text()),
        }
    }
}
