//! Server-rendered pages for people: they work without JavaScript, every state-changing form
//! carries a CSRF token, and errors come back as pages rather than JSON.

mod audit;
mod auth;
pub mod look;
mod new_request;
mod requests;
mod ticket;
mod view;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::AppError;
use crate::auth::session::{cookie_name, hash_id, tokens_match};
use crate::domain::Person;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(requests::dashboard))
        .route("/login", get(auth::signin_page))
        .route("/auth/login", get(auth::start))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
        .route(
            "/requests/new",
            get(new_request::new_form).post(new_request::submit),
        )
        .route("/requests/{id}", get(requests::show))
        .route("/requests/{id}/approve", post(requests::approve))
        .route("/requests/{id}/reject", post(requests::reject))
        .route("/requests/{id}/cancel", post(requests::cancel))
        .route("/requests/{id}/close", post(requests::close))
        .route("/requests/{id}/extend", post(requests::extend))
        .route("/requests/{id}/review", post(requests::review))
        .route("/requests/{id}/look", post(look::again))
        .route("/audit", get(audit::index))
        .route("/tickets/{ticket}", get(ticket::show))
        .route("/static/app.css", get(stylesheet))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../static/app.css"),
    )
}

/// What the header of every page needs.
pub struct Nav {
    pub user: Option<String>,
    pub csrf: String,
    pub can_request: bool,
    pub can_audit: bool,
}

impl Nav {
    pub fn anonymous() -> Self {
        Nav {
            user: None,
            csrf: String::new(),
            can_request: false,
            can_audit: false,
        }
    }
}

/// A signed-in person, from the session cookie. Pages that need one send everyone else to
/// the sign-in page, and back here afterwards.
pub struct SignedIn {
    pub person: Person,
    pub csrf: String,
    pub id_hash: String,
    /// When the person last authenticated at the provider: decisions need it recent.
    pub signed_in_at: crate::clock::Millis,
}

impl SignedIn {
    pub fn nav(&self, state: &AppState) -> Nav {
        Nav {
            user: Some(self.person.name.clone()),
            csrf: self.csrf.clone(),
            can_request: state.config.roles.may_file(&self.person),
            can_audit: state.config.roles.audits(&self.person),
        }
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let jar = CookieJar::from_headers(&parts.headers);
        let found = match jar.get(cookie_name(state.secure_cookies)) {
            Some(cookie) => {
                let id_hash = hash_id(cookie.value());
                let now = state.clock.now();
                // Showing a page may take the session from the read cache; anything that
                // changes something reads it from the database, so a sign-out on another
                // replica stops it at once.
                let session = if parts.method == Method::GET || parts.method == Method::HEAD {
                    state.store.session_for_view(&id_hash, now).await
                } else {
                    state.store.session(&id_hash, now).await
                };
                match session {
                    Ok(Some(session)) => Some(SignedIn {
                        person: Person {
                            issuer: session.issuer,
                            subject: session.subject,
                            name: session.name,
                            groups: session.groups,
                        },
                        csrf: session.csrf_token,
                        id_hash,
                        signed_in_at: session.signed_in_at,
                    }),
                    Ok(None) => None,
                    Err(e) => return Err(PageError(e.into()).into_response()),
                }
            }
            None => None,
        };
        found.ok_or_else(|| {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let target = if parts.method == Method::GET {
                next
            } else {
                "/"
            };
            Redirect::to(&format!("/login?next={}", urlencode(target))).into_response()
        })
    }
}

/// A form body, accepted only with the session's CSRF token in its `csrf` field. The token is
/// checked before the rest of the form is read, so a forged post is refused whatever it holds.
pub struct CsrfForm<T> {
    pub viewer: SignedIn,
    pub form: T,
}

#[derive(serde::Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = SignedIn::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, crate::config::BODY_LIMIT)
            .await
            .map_err(|_| {
                PageError(AppError::TooLarge("the form is too large".into())).into_response()
            })?;
        let given: CsrfOnly = serde_urlencoded::from_bytes(&bytes).unwrap_or(CsrfOnly {
            csrf: String::new(),
        });
        if !tokens_match(&viewer.csrf, &given.csrf) {
            return Err(PageError(AppError::Forbidden(
                "this form's security token is missing or out of date; reload the page and try again".into(),
            ))
            .into_response());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            PageError(AppError::BadRequest(format!(
                "the form could not be read: {e}"
            )))
            .into_response()
        })?;
        Ok(CsrfForm { viewer, form })
    }
}

/// An [`AppError`] shown as a page.
pub struct PageError(pub AppError);

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        PageError(e)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        PageError(e.into())
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    status: u16,
    title: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let message = match &self.0 {
            AppError::Internal(e) => {
                let id = uuid::Uuid::new_v4();
                tracing::error!(error_id = %id, error = ?e, "internal error");
                format!("Something went wrong on our side (reference {id}).")
            }
            other => other.to_string(),
        };
        let page = ErrorPage {
            nav: Nav::anonymous(),
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message,
        };
        (status, page).into_response()
    }
}

pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The longest path a sign-in returns to: it travels in the sign-in cookie, which browsers
/// keep only up to about 4 KB.
pub const MAX_RETURN_PATH: usize = 2048;

/// Only local paths may be returned to after sign-in: never another site.
pub fn safe_return_path(next: Option<&str>) -> String {
    match next {
        // Printable ASCII only: browsers drop tabs and newlines from URLs, so `/\t/evil` would
        // become `//evil`, another site; control characters would also break the header.
        Some(path)
            if path.len() <= MAX_RETURN_PATH
                && path.starts_with('/')
                && !path.starts_with("//")
                && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

pub fn see_other(path: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, path.to_owned())]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(safe_return_path(Some("/requests/1")), "/requests/1");
        assert_eq!(safe_return_path(Some("//evil.example")), "/");
        assert_eq!(safe_return_path(Some("https://evil.example")), "/");
        assert_eq!(safe_return_path(Some("/\\evil.example")), "/");
        assert_eq!(safe_return_path(None), "/");
        assert_eq!(safe_return_path(Some("/\t/evil.example")), "/");
        assert_eq!(safe_return_path(Some("/x\r\nSet-Cookie: a=b")), "/");
        assert_eq!(safe_return_path(Some("/ /evil.example")), "/");
        assert_eq!(
            safe_return_path(Some(&format!("/{}", "a".repeat(5000)))),
            "/"
        );
    }
}
