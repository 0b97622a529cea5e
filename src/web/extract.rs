//! Extractors: who is calling, and request bodies whose errors speak JSON.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::AppError;
use crate::auth::AuthError;
use crate::domain::Person;

/// The caller, from `Authorization: Bearer <OIDC ID token>`.
pub struct Caller(pub Person);

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                AppError::Unauthenticated(
                    "sign-in required: send Authorization: Bearer <ID token>".into(),
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::Unauthenticated(
                    "the Authorization header must be \"Bearer <ID token>\"".into(),
                )
            })?;
        match state.verifier.verify(token, None).await {
            Ok(person) => Ok(Caller(person)),
            Err(AuthError::Invalid(why)) => {
                Err(AppError::Unauthenticated(format!("invalid token: {why}")))
            }
            Err(e @ AuthError::ProviderUnavailable(_)) => Err(AppError::Unavailable(e.to_string())),
            Err(AuthError::NotAdmitted(why)) => Err(AppError::Forbidden(why)),
        }
    }
}

/// `Json<T>` whose rejections are the API's JSON errors, with 413 for oversized bodies.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::TooLarge("the request body is too large".into()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            AppError::BadRequest("send the body as JSON with Content-Type: application/json".into())
        }
        StatusCode::UNPROCESSABLE_ENTITY => AppError::invalid(rejection.body_text()),
        _ => AppError::BadRequest(rejection.body_text()),
    }
}

/// `Query<T>` whose rejections are the API's JSON errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> AppError {
    AppError::BadRequest(rejection.body_text())
}
