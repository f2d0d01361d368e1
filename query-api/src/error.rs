//! The query API's errors and the one place they become HTTP answers.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad SQL, a write statement, a malformed request.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The query is valid but asks for more than the server allows (result size, memory).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// What was asked for is no longer kept (a feed position the replica's log has let go).
    #[error("{0}")]
    Gone(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// No key, an unknown key, or a key without the `read` scope.
    #[error(transparent)]
    Auth(#[from] sluice_auth::AuthError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Auth(error) => error.status(),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        if std::error::Error::source(&status).is_some() {
            // Made on this side of the wire: the call to the handler broke in transport.
            return ApiError::Unavailable(format!(
                "the query handler did not answer: {}: {message}",
                status.code()
            ));
        }
        match status.code() {
            Code::InvalidArgument => ApiError::BadRequest(message),
            Code::NotFound => ApiError::NotFound(message),
            Code::ResourceExhausted => ApiError::Unprocessable(message),
            Code::DeadlineExceeded => ApiError::Timeout(message),
            Code::OutOfRange => ApiError::Gone(message),
            Code::Unavailable => {
                ApiError::Unavailable(format!("the query handler is not available: {message}"))
            }
            _ => ApiError::Internal(format!("{}: {message}", status.code())),
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
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("the body is larger than this server accepts".into())
            }
            status if status.is_client_error() => ApiError::BadRequest(rejection.body_text()),
            _ => ApiError::Internal(rejection.body_text()),
        }
    }
}
