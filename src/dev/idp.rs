//! A development OpenID Provider with fixed personas. It signs real RS256 ID tokens with a key
//! made at start-up and publishes discovery and JWKS, so the broker verifies its tokens through
//! exactly the code that verifies a production provider's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use base64::Engine;
use chrono::Duration;
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey,
};
use openidconnect::{
    Audience, EndUserUsername, IssuerUrl, JsonWebKeyId, Nonce, PrivateSigningKey, StandardClaims,
    SubjectIdentifier,
};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

use crate::auth::oidc::{IdToken, OtherClaims};
use crate::auth::session::random_token;
use crate::clock::{Clock, Millis};
use crate::web::pages::Nav;

/// The people of `dev` mode and their groups.
pub const PERSONAS: [(&str, &[&str]); 6] = [
    ("alice", &["oncall"]),
    ("bob", &["approvers"]),
    ("carol", &["approvers"]),
    ("erin", &["oncall", "approvers"]),
    ("dave", &["auditors"]),
    ("mallory", &[]),
];

pub const CLIENT_ID: &str = "breakglass-dev";

#[derive(Clone)]
pub struct DevIdp {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    key: CoreRsaPrivateSigningKey,
    jwks: CoreJsonWebKeySet,
    clock: Clock,
    /// Codes handed to browsers and not yet exchanged; each works once, for a minute.
    grants: Mutex<HashMap<String, Grant>>,
    /// Set by tests to make the code exchange answer wrongly on purpose.
    misbehaviour: Mutex<Option<Misbehaviour>>,
    /// Each persona's groups now: they start as in [`PERSONAS`], and tests change them to
    /// watch the broker follow what the provider says at the next sign-in.
    groups: Mutex<HashMap<String, Vec<String>>>,
}

/// A way for the code exchange to go wrong, so tests can watch the broker refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// The ID token carries another nonce than the one the browser brought.
    WrongNonce,
}

struct Grant {
    persona: String,
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    /// When the persona was chosen: the person's authentication, `auth_time`.
    chosen_at: chrono::DateTime<chrono::Utc>,
    expires_at: Millis,
}

/// What a token is made for; tests ask for wrong audiences, past expiry, tokens from the
/// future and too long lifetimes on purpose.
pub struct TokenSpec<'a> {
    pub persona: &'a str,
    pub audience: &'a str,
    pub ttl: Duration,
    pub nonce: Option<&'a Nonce>,
    /// A second audience beside `audience`.
    pub extra_audience: Option<&'a str>,
    /// The authorized party (`azp`) claim, if any.
    pub azp: Option<&'a str>,
    /// How far from now `iat` is (and so `exp`, which is `iat + ttl`).
    pub issued_in: Duration,
    /// A `nbf` claim this far from now, if any.
    pub not_before_in: Option<Duration>,
    /// `preferred_username`; the persona's name unless set (`Some("")` leaves it out).
    pub username: Option<&'a str>,
    /// `email` and `email_verified`, if any.
    pub email: Option<(&'a str, bool)>,
    /// `sub`; the persona's name unless set. Two tokens with one name and two subjects are
    /// two people who call themselves the same.
    pub subject: Option<&'a str>,
    /// An `auth_time` claim: when the person authenticated.
    pub auth_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl<'a> TokenSpec<'a> {
    /// A well-formed token for `persona` with the broker's audience, for an hour.
    pub fn new(persona: &'a str) -> Self {
        TokenSpec {
            persona,
            audience: CLIENT_ID,
            ttl: Duration::seconds(3600),
            nonce: None,
            extra_audience: None,
            azp: None,
            issued_in: Duration::zero(),
            not_before_in: None,
            username: None,
            email: None,
            subject: None,
            auth_time: None,
        }
    }
}

impl DevIdp {
    /// `issuer` is the URL the provider is served at, e.g. `http://127.0.0.1:8080/dev/idp`.
    pub fn new(issuer: &str, clock: Clock) -> anyhow::Result<Self> {
        Self::with_key_id(issuer, "dev-1", clock)
    }

    /// A provider with a fresh key published under `key_id`. Tests make a second one to sign
    /// tokens with a key the broker's issuer does not publish.
    pub fn with_key_id(issuer: &str, key_id: &str, clock: Clock) -> anyhow::Result<Self> {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        let pem = private.to_pkcs1_pem(LineEnding::LF)?;
        let key = CoreRsaPrivateSigningKey::from_pem(&pem, Some(JsonWebKeyId::new(key_id.into())))
            .map_err(anyhow::Error::msg)?;
        let jwks = CoreJsonWebKeySet::new(vec![key.as_verification_key()]);
        Ok(Self {
            inner: Arc::new(Inner {
                issuer: issuer.trim_end_matches('/').to_owned(),
                key,
                jwks,
                clock,
                grants: Mutex::new(HashMap::new()),
                misbehaviour: Mutex::new(None),
                groups: Mutex::new(
                    PERSONAS
                        .iter()
                        .map(|(name, groups)| {
                            let groups = groups.iter().map(|g| (*g).to_owned()).collect();
                            ((*name).to_owned(), groups)
                        })
                        .collect(),
                ),
            }),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// A persona's groups now, or None if there is no such persona.
    pub fn groups(&self, persona: &str) -> Option<Vec<String>> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(persona)
            .cloned()
    }

    /// Gives a persona other groups from now on (as when someone is removed from a group at
    /// the provider); false if there is no such persona.
    pub fn set_groups(&self, persona: &str, groups: Vec<String>) -> bool {
        let mut all = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match all.get_mut(persona) {
            Some(now) => {
                *now = groups;
                true
            }
            None => false,
        }
    }

    /// Makes every later code exchange misbehave this way (`None`: behave again).
    pub fn misbehave(&self, misbehaviour: Option<Misbehaviour>) {
        *self
            .inner
            .misbehaviour
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = misbehaviour;
    }

    fn misbehaviour(&self) -> Option<Misbehaviour> {
        *self
            .inner
            .misbehaviour
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A signed ID token for a persona, or None if there is no such persona.
    pub fn token(&self, spec: &TokenSpec<'_>) -> anyhow::Result<Option<String>> {
        self.token_from(spec, &self.inner.issuer)
    }

    /// [`DevIdp::token`] with another `iss` claim, signed with this provider's own key.
    pub fn token_from(&self, spec: &TokenSpec<'_>, issuer: &str) -> anyhow::Result<Option<String>> {
        let Some(groups) = self.groups(spec.persona) else {
            return Ok(None);
        };
        let now = self.inner.clock.now_utc() + spec.issued_in;
        let subject = spec.subject.unwrap_or(spec.persona);
        let standard =
            StandardClaims::<CoreGenderClaim>::new(SubjectIdentifier::new(subject.into()))
                .set_preferred_username(
                    Some(spec.username.unwrap_or(spec.persona))
                        .filter(|u| !u.is_empty())
                        .map(|u| EndUserUsername::new(u.into())),
                )
                .set_email(
                    spec.email
                        .map(|(e, _)| openidconnect::EndUserEmail::new(e.into())),
                )
                .set_email_verified(spec.email.map(|(_, verified)| verified));
        let mut other = OtherClaims {
            claims: [("groups".to_owned(), json!(groups))].into_iter().collect(),
        };
        if let Some(offset) = spec.not_before_in {
            let nbf = (self.inner.clock.now_utc() + offset).timestamp();
            other.claims.insert("nbf".to_owned(), json!(nbf));
        }
        let mut audiences = vec![Audience::new(spec.audience.into())];
        audiences.extend(spec.extra_audience.map(|a| Audience::new(a.into())));
        let claims = openidconnect::IdTokenClaims::new(
            IssuerUrl::new(issuer.to_owned())?,
            audiences,
            now + spec.ttl,
            now,
            standard,
            other,
        )
        .set_nonce(spec.nonce.cloned())
        .set_auth_time(spec.auth_time)
        .set_authorized_party(spec.azp.map(|a| openidconnect::ClientId::new(a.into())));
        let token = IdToken::new(
            claims,
            &self.inner.key,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            None,
            None,
        )?;
        Ok(Some(token.to_string()))
    }

    /// The provider's routes, to be nested under the issuer's path.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", get(script_token).post(exchange))
            .route("/authorize", get(authorize_page).post(authorize))
            .route("/personas/{persona}/groups", axum::routing::put(put_groups))
            .with_state(self.clone())
    }
}

async fn discovery(State(idp): State<DevIdp>) -> Json<Value> {
    let issuer = idp.issuer();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "groups"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username", "groups"],
    }))
}

async fn jwks(State(idp): State<DevIdp>) -> Json<CoreJsonWebKeySet> {
    Json(idp.inner.jwks.clone())
}

#[derive(Deserialize)]
struct TokenQuery {
    persona: String,
    /// Another audience than the broker's client id, for testing refusals.
    audience: Option<String>,
    /// Lifetime in seconds (default 3600); negative makes an already expired token.
    ttl_seconds: Option<i64>,
    /// A second audience.
    extra_audience: Option<String>,
    /// An `azp` claim.
    azp: Option<String>,
    /// `iat` this many seconds from now (positive: from the future).
    iat_offset_seconds: Option<i64>,
    /// An `nbf` claim this many seconds from now.
    nbf_offset_seconds: Option<i64>,
    /// `preferred_username` instead of the persona's name; empty leaves it out.
    username: Option<String>,
    /// An `email` claim, and whether it is verified.
    email: Option<String>,
    email_verified: Option<bool>,
    /// `sub` instead of the persona's name.
    subject: Option<String>,
}

/// `PUT /dev/idp/personas/NAME/groups` with a JSON array of group names: the persona has
/// these groups from now on (at its next sign-in or token), as when an administrator changes
/// them at the provider.
async fn put_groups(
    State(idp): State<DevIdp>,
    axum::extract::Path(persona): axum::extract::Path<String>,
    Json(groups): Json<Vec<String>>,
) -> Response {
    if idp.set_groups(&persona, groups) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no persona {persona:?}") })),
        )
            .into_response()
    }
}

/// `GET /dev/idp/token?persona=NAME`: a token for scripts and tests, no browser needed.
async fn script_token(
    State(idp): State<DevIdp>,
    Query(q): Query<TokenQuery>,
) -> (axum::http::StatusCode, Json<Value>) {
    const TEN_YEARS: i64 = 10 * 366 * 86_400;
    let spec = TokenSpec {
        audience: q.audience.as_deref().unwrap_or(CLIENT_ID),
        ttl: Duration::seconds(q.ttl_seconds.unwrap_or(3600).clamp(-TEN_YEARS, TEN_YEARS)),
        extra_audience: q.extra_audience.as_deref(),
        azp: q.azp.as_deref(),
        issued_in: Duration::seconds(
            q.iat_offset_seconds
                .unwrap_or(0)
                .clamp(-TEN_YEARS, TEN_YEARS),
        ),
        not_before_in: q
            .nbf_offset_seconds
            .map(|s| Duration::seconds(s.clamp(-TEN_YEARS, TEN_YEARS))),
        username: q.username.as_deref(),
        subject: q.subject.as_deref().filter(|s| !s.is_empty()),
        email: q
            .email
            .as_deref()
            .map(|e| (e, q.email_verified.unwrap_or(false))),
        ..TokenSpec::new(&q.persona)
    };
    match idp.token(&spec) {
        Ok(Some(token)) => (
            axum::http::StatusCode::OK,
            Json(json!({ "id_token": token })),
        ),
        Ok(None) => {
            let known: Vec<&str> = PERSONAS.iter().map(|(n, _)| *n).collect();
            (
                axum::http::StatusCode::NOT_FOUND,
                Json(
                    json!({ "error": format!("no persona {:?}; try one of {}", q.persona, known.join(", ")) }),
                ),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "dev issuer could not sign a token");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": "signing failed" })),
            )
        }
    }
}

/// What the broker sends the browser to `/authorize` with.
#[derive(Clone, Deserialize)]
struct AuthorizeParams {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    state: String,
    nonce: Option<String>,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    /// Set by the persona buttons.
    persona: Option<String>,
}

impl AuthorizeParams {
    /// The checks a real provider makes before showing a sign-in page. Redirects go only to
    /// loopback: this issuer exists for `dev` mode and tests.
    fn check(&self) -> Result<(), String> {
        if self.response_type != "code" {
            return Err("response_type must be code".into());
        }
        if self.client_id != CLIENT_ID {
            return Err(format!("unknown client_id {:?}", self.client_id));
        }
        let loopback = url::Url::parse(&self.redirect_uri)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| matches!(h, "127.0.0.1" | "localhost" | "[::1]"))
            })
            .unwrap_or(false);
        if !loopback {
            return Err("redirect_uri must be a loopback URL".into());
        }
        if self.code_challenge_method != "S256" || self.code_challenge.is_empty() {
            return Err("PKCE with code_challenge_method=S256 is required".into());
        }
        if !self.scope.split(' ').any(|s| s == "openid") {
            return Err("scope must include openid".into());
        }
        Ok(())
    }
}

pub struct PersonaChoice {
    pub name: &'static str,
    pub groups: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "dev/signin.html")]
struct SigninPage {
    nav: Nav,
    action: String,
    hidden: Vec<(&'static str, String)>,
    personas: Vec<PersonaChoice>,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

async fn authorize_page(
    State(idp): State<DevIdp>,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    if let Err(why) = params.check() {
        return bad_request(why);
    }
    let mut hidden = vec![
        ("response_type", params.response_type.clone()),
        ("client_id", params.client_id.clone()),
        ("redirect_uri", params.redirect_uri.clone()),
        ("scope", params.scope.clone()),
        ("state", params.state.clone()),
        ("code_challenge", params.code_challenge.clone()),
        (
            "code_challenge_method",
            params.code_challenge_method.clone(),
        ),
    ];
    if let Some(nonce) = &params.nonce {
        hidden.push(("nonce", nonce.clone()));
    }
    SigninPage {
        nav: Nav::anonymous(),
        action: format!("{}/authorize", idp.issuer()),
        hidden,
        personas: PERSONAS
            .iter()
            .map(|(name, _)| {
                let groups = idp.groups(name).unwrap_or_default();
                PersonaChoice {
                    name,
                    groups: if groups.is_empty() {
                        "no groups".into()
                    } else {
                        groups.join(", ")
                    },
                }
            })
            .collect(),
    }
    .into_response()
}

/// A persona was chosen: back to the client with a one-time code.
async fn authorize(State(idp): State<DevIdp>, Form(params): Form<AuthorizeParams>) -> Response {
    if let Err(why) = params.check() {
        return bad_request(why);
    }
    let Some(persona) = params.persona.filter(|p| idp.groups(p).is_some()) else {
        return bad_request("choose one of the personas".into());
    };
    let code = random_token();
    let grant = Grant {
        persona,
        client_id: params.client_id,
        redirect_uri: params.redirect_uri.clone(),
        code_challenge: params.code_challenge,
        nonce: params.nonce,
        chosen_at: idp.inner.clock.now_utc(),
        expires_at: idp.inner.clock.now() + 60_000,
    };
    if let Ok(mut grants) = idp.inner.grants.lock() {
        let now = idp.inner.clock.now();
        grants.retain(|_, g| g.expires_at > now);
        grants.insert(code.clone(), grant);
    }
    let mut target = match url::Url::parse(&params.redirect_uri) {
        Ok(url) => url,
        Err(_) => return bad_request("redirect_uri is not a URL".into()),
    };
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &params.state);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, target.to_string())],
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    code_verifier: String,
    client_id: Option<String>,
}

fn token_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// The code exchange: one use per code, same redirect URI, and the PKCE verifier must hash to
/// the challenge the browser carried.
async fn exchange(State(idp): State<DevIdp>, Form(form): Form<TokenForm>) -> Response {
    if form.grant_type != "authorization_code" {
        return token_error(
            "unsupported_grant_type",
            "only authorization_code is supported",
        );
    }
    let grant = idp
        .inner
        .grants
        .lock()
        .ok()
        .and_then(|mut grants| grants.remove(&form.code));
    let Some(grant) = grant.filter(|g| g.expires_at > idp.inner.clock.now()) else {
        return token_error(
            "invalid_grant",
            "the code is unknown, expired or already used",
        );
    };
    if grant.redirect_uri != form.redirect_uri
        || form
            .client_id
            .as_deref()
            .is_some_and(|c| c != grant.client_id)
    {
        return token_error(
            "invalid_grant",
            "redirect_uri or client_id does not match the authorization request",
        );
    }
    let hashed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(form.code_verifier.as_bytes()));
    if hashed != grant.code_challenge {
        return token_error(
            "invalid_grant",
            "the PKCE code_verifier does not match the code_challenge",
        );
    }
    let nonce = match idp.misbehaviour() {
        Some(Misbehaviour::WrongNonce) => Some(Nonce::new("not-the-nonce-you-sent".into())),
        None => grant.nonce.map(Nonce::new),
    };
    let spec = TokenSpec {
        nonce: nonce.as_ref(),
        auth_time: Some(grant.chosen_at),
        ..TokenSpec::new(&grant.persona)
    };
    match idp.token(&spec) {
        Ok(Some(id_token)) => Json(json!({
            "access_token": random_token(),
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": id_token,
        }))
        .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "server_error" })),
        )
            .into_response(),
    }
}
