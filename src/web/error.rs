//! One error type for every handler; one place that turns it into a response.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::policy::Finding;
use crate::lifecycle::LifecycleError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// 422 with a message a person can act on, and the findings behind it.
    #[error("{message}")]
    Invalid {
        message: String,
        findings: Vec<Finding>,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// 429, with `Retry-After`.
    #[error("{message}")]
    TooMany {
        message: String,
        retry_after_seconds: u64,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn invalid(message: impl Into<String>) -> Self {
        AppError::Invalid {
            message: message.into(),
            findings: Vec::new(),
        }
    }

    pub fn refused(findings: Vec<Finding>) -> Self {
        let message = findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        AppError::Invalid { message, findings }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                AppError::Unavailable(
                    "the database is unavailable; nothing was changed, try again shortly".into(),
                )
            }
            StoreError::Unstorable(_) => AppError::BadRequest(
                "text in this request holds a NUL character (\\u0000 or %00), which the broker does not store".into(),
            ),
            StoreError::Other(e) => AppError::Internal(e.into()),
        }
    }
}

impl From<LifecycleError> for AppError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Forbidden(message) => AppError::Forbidden(message),
            LifecycleError::NotFound => AppError::NotFound,
            LifecycleError::Conflict(message) => AppError::Conflict(message),
            LifecycleError::Invalid(message) => AppError::invalid(message),
            LifecycleError::Refused(findings) => AppError::refused(findings),
            LifecycleError::TooLarge(message) => AppError::TooLarge(message),
            LifecycleError::Unavailable(message) => AppError::Unavailable(message),
            e @ LifecycleError::TooMany {
                retry_after_seconds,
                ..
            } => AppError::TooMany {
                message: e.to_string(),
                retry_after_seconds,
            },
            LifecycleError::Store(e) => e.into(),
            LifecycleError::Internal(e) => AppError::Internal(e),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            AppError::Internal(e) => {
                let id = uuid::Uuid::new_v4();
                tracing::error!(error_id = %id, error = ?e, "internal error");
                json!({ "error": format!("internal error (reference {id})") })
            }
            AppError::Invalid { message, findings } if !findings.is_empty() => {
                json!({ "error": message, "findings": findings })
            }
            other => json!({ "error": other.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if let AppError::TooMany {
            retry_after_seconds,
            ..
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_seconds),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
