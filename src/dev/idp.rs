//! A development OpenID Provider with fixed personas. It signs real RS256 ID tokens with a key
//! made at start-up and publishes discovery and JWKS, so the broker verifies its tokens through
//! exactly the code that verifies a production provider's.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
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

use crate::auth::oidc::{IdToken, OtherClaims};
use crate::clock::Clock;

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
}

/// What a token is made for; tests ask for wrong audiences and past expiry on purpose.
pub struct TokenSpec<'a> {
    pub persona: &'a str,
    pub audience: &'a str,
    pub ttl: Duration,
    pub nonce: Option<&'a Nonce>,
}

impl DevIdp {
    /// `issuer` is the URL the provider is served at, e.g. `http://127.0.0.1:8080/dev/idp`.
    pub fn new(issuer: &str, clock: Clock) -> anyhow::Result<Self> {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        let pem = private.to_pkcs1_pem(LineEnding::LF)?;
        let key = CoreRsaPrivateSigningKey::from_pem(&pem, Some(JsonWebKeyId::new("dev-1".into())))
            .map_err(anyhow::Error::msg)?;
        let jwks = CoreJsonWebKeySet::new(vec![key.as_verification_key()]);
        Ok(Self {
            inner: Arc::new(Inner {
                issuer: issuer.trim_end_matches('/').to_owned(),
                key,
                jwks,
                clock,
            }),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    pub fn groups(persona: &str) -> Option<&'static [&'static str]> {
        PERSONAS
            .iter()
            .find(|(name, _)| *name == persona)
            .map(|(_, groups)| *groups)
    }

    /// A signed ID token for a persona, or None if there is no such persona.
    pub fn token(&self, spec: &TokenSpec<'_>) -> anyhow::Result<Option<String>> {
        let Some(groups) = Self::groups(spec.persona) else {
            return Ok(None);
        };
        let now = self.inner.clock.now_utc();
        let standard =
            StandardClaims::<CoreGenderClaim>::new(SubjectIdentifier::new(spec.persona.into()))
                .set_preferred_username(Some(EndUserUsername::new(spec.persona.into())));
        let other = OtherClaims {
            claims: [("groups".to_owned(), json!(groups))].into_iter().collect(),
        };
        let claims = openidconnect::IdTokenClaims::new(
            IssuerUrl::new(self.inner.issuer.clone())?,
            vec![Audience::new(spec.audience.into())],
            now + spec.ttl,
            now,
            standard,
            other,
        )
        .set_nonce(spec.nonce.cloned());
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
            .route("/token", get(script_token))
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
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "preferred_username", "groups"],
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
}

/// `GET /dev/idp/token?persona=NAME`: a token for scripts and tests, no browser needed.
async fn script_token(
    State(idp): State<DevIdp>,
    Query(q): Query<TokenQuery>,
) -> (axum::http::StatusCode, Json<Value>) {
    let spec = TokenSpec {
        persona: &q.persona,
        audience: q.audience.as_deref().unwrap_or(CLIENT_ID),
        ttl: Duration::seconds(q.ttl_seconds.unwrap_or(3600).clamp(-86_400, 86_400)),
        nonce: None,
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
