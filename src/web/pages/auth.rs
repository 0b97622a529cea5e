//! Sign-in and sign-out pages.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::PrivateCookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};

use super::{CsrfForm, Nav, PageError, safe_return_path, see_other};
use crate::auth::session::{
    LOGIN_MS, cookie_name, hash_id, login_cookie_name, random_token, tokens_match,
};
use crate::store::Session;
use crate::web::AppState;
use crate::web::error::AppError;

#[derive(Template, WebTemplate)]
#[template(path = "auth/signin.html")]
pub struct SigninPage {
    nav: Nav,
    start_url: String,
    issuer: String,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct StartQuery {
    next: Option<String>,
    /// Set when a decision needs a fresh authentication at the provider.
    #[serde(default)]
    fresh: Option<String>,
}

pub async fn signin_page(State(state): State<AppState>, Query(q): Query<NextQuery>) -> SigninPage {
    let next = safe_return_path(q.next.as_deref());
    SigninPage {
        nav: Nav::anonymous(),
        start_url: format!("/auth/login?next={}", super::urlencode(&next)),
        issuer: state.config.oidc.issuer.clone(),
    }
}

fn cookie(state: &AppState, name: &'static str, value: String, max_age_ms: i64) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(state.secure_cookies)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::milliseconds(max_age_ms))
        .build()
}

/// A sign-in on its way through the provider: what the callback must find again. It lives in
/// the browser's login cookie, sealed (encrypted and authenticated) with a key the replicas
/// share, so that starting a sign-in stores nothing: a flood of anonymous starts neither grows
/// the database nor pushes anyone else's sign-in out.
#[derive(Serialize, Deserialize)]
struct SignInInFlight {
    state: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    created_at: i64,
    /// Set when the sign-in must be a fresh authentication (for a decision).
    max_age_seconds: Option<i64>,
}

/// Leaves for the identity provider with a fresh state, nonce and PKCE challenge.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Result<Response, PageError> {
    let max_age = q
        .fresh
        .is_some()
        .then_some(state.config.oidc.decision_max_age);
    let started = state
        .login
        .start(&state.verifier, max_age)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let in_flight = SignInInFlight {
        state: started.state,
        nonce: started.nonce,
        pkce_verifier: started.pkce_verifier,
        return_to: safe_return_path(q.next.as_deref()),
        created_at: state.clock.now(),
        max_age_seconds: max_age.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    };
    let sealed = serde_json::to_string(&in_flight).map_err(|e| AppError::Internal(e.into()))?;
    let jar = PrivateCookieJar::from_headers(&headers, state.login_key.clone()).add(cookie(
        &state,
        login_cookie_name(state.secure_cookies),
        sealed,
        LOGIN_MS,
    ));
    Ok((jar, see_other(&started.url)).into_response())
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Back from the provider: the state must be one we issued, to this browser, unused and
/// recent; the code is exchanged with the PKCE verifier and the ID token checked with the nonce.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(q): Query<Callback>,
) -> Result<Response, PageError> {
    if let Some(error) = q.error {
        let detail = q
            .error_description
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err(AppError::Forbidden(format!(
            "the identity provider did not sign you in ({error}{detail})"
        ))
        .into());
    }
    let (Some(code), Some(returned_state)) = (q.code, q.state) else {
        return Err(AppError::BadRequest(
            "this sign-in link is incomplete; start again from the sign-in page".into(),
        )
        .into());
    };
    let login_cookie = login_cookie_name(state.secure_cookies);
    let sealed = PrivateCookieJar::from_headers(&headers, state.login_key.clone());
    let now = state.clock.now();
    let attempt = sealed
        .get(login_cookie)
        .and_then(|c| serde_json::from_str::<SignInInFlight>(c.value()).ok())
        .filter(|a| tokens_match(&a.state, &returned_state) && a.created_at >= now - LOGIN_MS);
    let Some(attempt) = attempt else {
        return Err(AppError::BadRequest(
            "this sign-in has expired, was already used, or was started in another browser; start again from the sign-in page".into(),
        )
        .into());
    };
    let signed_in = state
        .login
        .finish(
            &state.verifier,
            &code,
            &attempt.pkce_verifier,
            &attempt.nonce,
        )
        .await
        .map_err(|e| AppError::Forbidden(format!("sign-in failed: {e}")))?;
    let signed_in_at = authenticated_at(signed_in.auth_time, attempt.max_age_seconds, now)?;
    let person = signed_in.person;
    tracing::info!(user = %person.name, subject = %person.subject, "signed in");
    // The session this browser had, if any, ends here: one person, one session at a time.
    if let Some(old) = jar.get(cookie_name(state.secure_cookies)) {
        state.store.delete_session(&hash_id(old.value())).await?;
    }
    // A new session id at every sign-in: nothing from before it can ride along.
    let id = random_token();
    let session = Session {
        issuer: person.issuer,
        subject: person.subject,
        name: person.name,
        groups: person.groups,
        csrf_token: random_token(),
        signed_in_at,
        expires_at: now + session_ms(&state),
    };
    state
        .store
        .insert_session(&hash_id(&id), &session, now)
        .await?;
    // Expired sessions go at a sign-in: a moment that a person, not a flood, brings about.
    state.store.purge_sessions(now).await?;
    let sealed = sealed.remove(
        Cookie::build(login_cookie)
            .path("/")
            .secure(state.secure_cookies),
    );
    let jar = jar.add(cookie(
        &state,
        cookie_name(state.secure_cookies),
        id,
        session_ms(&state),
    ));
    Ok((sealed, jar, see_other(&attempt.return_to)).into_response())
}

/// When the person authenticated at the provider: its `auth_time` (never later than now), or
/// this sign-in when it does not say. A sign-in that asked for a fresh authentication
/// (`max_age`) must get one: an `auth_time` within it, or the sign-in fails rather than loop.
fn authenticated_at(
    auth_time: Option<i64>,
    max_age_seconds: Option<i64>,
    now: i64,
) -> Result<i64, AppError> {
    if let Some(max_age) = max_age_seconds {
        let allowed = max_age.saturating_mul(1000).saturating_add(CLOCK_SKEW_MS);
        match auth_time {
            Some(at) if now - at <= allowed => {}
            Some(_) => {
                return Err(AppError::Forbidden(
                    "the identity provider did not sign you in again (its auth_time is older than asked); your decision was not recorded — go back to the request and try again".into(),
                ));
            }
            None => {
                return Err(AppError::Forbidden(
                    "the identity provider did not say when you signed in (no auth_time), so this sign-in cannot stand behind a decision; your decision was not recorded".into(),
                ));
            }
        }
    }
    Ok(auth_time.map_or(now, |at| at.min(now)))
}

/// How far the provider's clock may be from ours.
const CLOCK_SKEW_MS: i64 = 60_000;

/// How long a session lasts, from `[oidc] session_max_age`.
fn session_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.oidc.session_max_age.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
    form: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    state.store.delete_session(&form.viewer.id_hash).await?;
    // `__Host-` cookies are only replaced by a cookie that is `Secure` too.
    let jar = jar.remove(
        Cookie::build(cookie_name(state.secure_cookies))
            .path("/")
            .secure(state.secure_cookies),
    );
    Ok((jar, see_other("/login")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn a_sign_in_asked_to_be_fresh_needs_an_auth_time_within_max_age() {
        let minute = 60_000;
        assert_eq!(
            authenticated_at(Some(NOW - minute), Some(900), NOW).ok(),
            Some(NOW - minute)
        );
        assert!(
            authenticated_at(Some(NOW - 20 * minute), Some(900), NOW).is_err(),
            "an old authentication the provider did not renew"
        );
        assert!(
            authenticated_at(None, Some(900), NOW).is_err(),
            "no auth_time at all"
        );
    }

    #[test]
    fn an_ordinary_sign_in_dates_from_its_auth_time_never_from_the_future() {
        let hour = 3_600_000;
        assert_eq!(
            authenticated_at(Some(NOW - hour), None, NOW).ok(),
            Some(NOW - hour)
        );
        assert_eq!(
            authenticated_at(Some(NOW + hour), None, NOW).ok(),
            Some(NOW)
        );
        assert_eq!(authenticated_at(None, None, NOW).ok(), Some(NOW));
    }
}
