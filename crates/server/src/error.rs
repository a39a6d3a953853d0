//! The one place that turns failures into Docker's wire form: a status and `{"message": ...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use node::RuntimeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message)
    }
}

pub use node::error_chain;

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let status = match &e {
            RuntimeError::NotFound(_) => StatusCode::NOT_FOUND,
            RuntimeError::Invalid(_) => StatusCode::BAD_REQUEST,
            RuntimeError::Conflict(_) => StatusCode::CONFLICT,
            RuntimeError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            RuntimeError::Quota(_) => StatusCode::FORBIDDEN,
            RuntimeError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            RuntimeError::NoRoom(_) => StatusCode::SERVICE_UNAVAILABLE,
            RuntimeError::NotModified(_) => StatusCode::NOT_MODIFIED,
            RuntimeError::Image(img) if img.to_string().contains("No such image") => {
                StatusCode::NOT_FOUND
            }
            RuntimeError::Image(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{}", error_chain(&e));
        }
        Self {
            status,
            message: error_chain(&e),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        ApiError::from(RuntimeError::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response();
        }
        (
            self.status,
            axum::Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
