//! ID token verification against the issuer's published keys.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdTokenVerifier, IssuerUrl, Nonce,
    SignatureVerificationError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::http_client;
use super::token_cache::TokenCache;
use crate::clock::{Clock, Millis};
use crate::domain::Person;

/// Claims beyond the standard ones, kept whole so the groups claim can have any name.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    pub claims: HashMap<String, serde_json::Value>,
}
impl AdditionalClaims for OtherClaims {}

pub type IdToken = openidconnect::IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub type IdTokenClaims = openidconnect::IdTokenClaims<OtherClaims, CoreGenderClaim>;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not a valid ID token from this broker's identity provider: {0}")]
    Invalid(String),
    #[error("the identity provider cannot be reached to check the token: {0}")]
    ProviderUnavailable(String),
    /// A valid token of someone this broker does not let in.
    #[error("{0}")]
    NotAdmitted(String),
}

/// Who may sign in at all (`[oidc] allowed_domains`, `required_groups`); empty lists let in
/// anyone the issuer vouches for.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    pub allowed_domains: Vec<String>,
    pub required_groups: Vec<String>,
}

/// Checks ID tokens. The issuer's metadata and keys are fetched on first use and again when a
/// token names a key we do not know (key rotation), at most once per `REFRESH_MS`.
pub struct Verifier {
    admission: Admission,
    issuer: IssuerUrl,
    client_id: ClientId,
    groups_claim: String,
    clock: Clock,
    http: reqwest::Client,
    provider: RwLock<Option<Provider>>,
    /// Bearer tokens that passed every check, until they expire.
    tokens: TokenCache,
}

/// What a token that passed every check says.
struct Verified {
    person: Person,
    auth_time: Option<chrono::DateTime<chrono::Utc>>,
    /// `exp`, in milliseconds.
    expires_at: Millis,
}

#[derive(Clone)]
struct Provider {
    metadata: Arc<CoreProviderMetadata>,
    fetched_at: Millis,
}

const REFRESH_MS: Millis = 30_000;
/// How far the provider's clock may run ahead of ours for `iat` and `nbf`.
const SKEW_SECONDS: i64 = 60;
/// The longest lifetime (`exp - iat`) a token may claim: a stolen token must not last for
/// years.
const MAX_LIFETIME_SECONDS: i64 = 24 * 3600;

impl Verifier {
    pub fn new(
        issuer: &str,
        client_id: &str,
        groups_claim: &str,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            issuer: IssuerUrl::new(issuer.to_owned())?,
            client_id: ClientId::new(client_id.to_owned()),
            groups_claim: groups_claim.to_owned(),
            clock,
            http: http_client::client(),
            provider: RwLock::new(None),
            tokens: TokenCache::default(),
            admission: Admission::default(),
        })
    }

    /// The same verifier, letting in only whom `admission` allows.
    pub fn admitting(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The issuer's metadata, fetched if we do not have it (or `refresh` and it is stale).
    pub async fn provider(&self, refresh: bool) -> Result<Arc<CoreProviderMetadata>, AuthError> {
        if let Some(p) = self.provider.read().await.as_ref()
            && (!refresh || self.clock.now() - p.fetched_at < REFRESH_MS)
        {
            return Ok(p.metadata.clone());
        }
        let mut slot = self.provider.write().await;
        if let Some(p) = slot.as_ref()
            && (!refresh || self.clock.now() - p.fetched_at < REFRESH_MS)
        {
            return Ok(p.metadata.clone());
        }
        let http = self.http.clone();
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &move |req| {
            http_client::send(http.clone(), req)
        })
        .await
        .map_err(|e| AuthError::ProviderUnavailable(e.to_string()))?;
        let metadata = Arc::new(metadata);
        *slot = Some(Provider {
            metadata: metadata.clone(),
            fetched_at: self.clock.now(),
        });
        Ok(metadata)
    }

    fn verifier(
        &self,
        jwks: CoreJsonWebKeySet,
    ) -> openidconnect::core::CoreIdTokenVerifier<'static> {
        let clock = self.clock.clone();
        IdTokenVerifier::new_public_client(self.client_id.clone(), self.issuer.clone(), jwks)
            .set_allowed_algs([CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256])
            .set_time_fn(move || clock.now_utc())
    }

    /// Verifies a bearer token and says who it names. `nonce` is checked when given (browser
    /// sign-in); bearer tokens carry none. A bearer token that passed every check is
    /// remembered (by its hash) until it expires, so that a caller's next requests are not
    /// checked again in full (see [`TokenCache`]).
    pub async fn verify(&self, token: &str, nonce: Option<&Nonce>) -> Result<Person, AuthError> {
        let key = nonce.is_none().then(|| TokenCache::key(token));
        let now = self.clock.now();
        if let Some(person) = key.as_ref().and_then(|key| self.tokens.get(key, now)) {
            return Ok(person);
        }
        let parsed = IdToken::from_str(token)
            .map_err(|e| AuthError::Invalid(format!("cannot be parsed ({e})")))?;
        let verified = self.verify_claims(&parsed, nonce).await?;
        if let Some(key) = key {
            self.tokens
                .insert(key, verified.person.clone(), now, verified.expires_at);
        }
        Ok(verified.person)
    }

    /// Checks signature (against the provider's keys, refetched once if the key is unknown),
    /// issuer, audience, expiry, algorithm and, when given, nonce.
    pub async fn verify_token(
        &self,
        token: &IdToken,
        nonce: Option<&Nonce>,
    ) -> Result<Person, AuthError> {
        Ok(self.verify_claims(token, nonce).await?.person)
    }

    /// [`Verifier::verify_token`], and also when the person last authenticated at the
    /// provider (the `auth_time` claim), if the token says.
    pub async fn verify_sign_in(
        &self,
        token: &IdToken,
        nonce: Option<&Nonce>,
    ) -> Result<(Person, Option<chrono::DateTime<chrono::Utc>>), AuthError> {
        let verified = self.verify_claims(token, nonce).await?;
        Ok((verified.person, verified.auth_time))
    }

    async fn verify_claims(
        &self,
        token: &IdToken,
        nonce: Option<&Nonce>,
    ) -> Result<Verified, AuthError> {
        let metadata = self.provider(false).await?;
        let claims = match self.check(token, metadata.jwks().clone(), nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let metadata = self.provider(true).await?;
                self.check(token, metadata.jwks().clone(), nonce)
            }
            other => other,
        }
        .map_err(|e| AuthError::Invalid(e.to_string()))?;
        self.check_more(&claims).map_err(AuthError::Invalid)?;
        let person = self.person(&claims);
        self.admit(&claims, &person)
            .map_err(AuthError::NotAdmitted)?;
        Ok(Verified {
            person,
            auth_time: claims.auth_time(),
            expires_at: claims.expiration().timestamp_millis(),
        })
    }

    /// Whether this person may use the broker at all: of an allowed domain (the `hd` claim,
    /// or a verified email's domain) and in a required group, when those are configured.
    fn admit(&self, claims: &IdTokenClaims, person: &Person) -> Result<(), String> {
        let domains = &self.admission.allowed_domains;
        if !domains.is_empty() {
            let hosted = claims
                .additional_claims()
                .claims
                .get("hd")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            let email_domain = claims
                .email()
                .filter(|_| claims.email_verified() == Some(true))
                .and_then(|e| e.as_str().rsplit_once('@').map(|(_, d)| d.to_owned()));
            let allowed = |d: &Option<String>| {
                d.as_deref()
                    .is_some_and(|d| domains.iter().any(|a| a.eq_ignore_ascii_case(d)))
            };
            if !allowed(&hosted) && !allowed(&email_domain) {
                return Err(format!(
                    "this broker lets in only people of {}; ask its operators if you need access",
                    domains.join(", ")
                ));
            }
        }
        let groups = &self.admission.required_groups;
        if !groups.is_empty() && !person.in_any(groups) {
            return Err(format!(
                "this broker lets in only members of {}; ask its operators if you need access",
                groups.join(", ")
            ));
        }
        Ok(())
    }

    /// What the signature, issuer, audience and expiry do not cover: the authorized party,
    /// tokens from the future, and lifetimes longer than a day.
    fn check_more(&self, claims: &IdTokenClaims) -> Result<(), String> {
        match claims.authorized_party() {
            Some(azp) if azp != &self.client_id => {
                return Err(format!(
                    "it was issued to another client (azp {:?}), not to this broker",
                    azp.as_str()
                ));
            }
            None if claims.audiences().len() > 1 => {
                return Err("it names several audiences but no authorized party (azp)".to_owned());
            }
            _ => {}
        }
        let now = self.clock.now_utc().timestamp();
        let issued = claims.issue_time().timestamp();
        if issued > now + SKEW_SECONDS {
            return Err("it was issued in the future (iat)".to_owned());
        }
        let not_before = claims
            .additional_claims()
            .claims
            .get("nbf")
            .and_then(serde_json::Value::as_i64);
        if not_before.is_some_and(|nbf| nbf > now + SKEW_SECONDS) {
            return Err("it is not valid yet (nbf)".to_owned());
        }
        if claims.expiration().timestamp() - issued > MAX_LIFETIME_SECONDS {
            return Err("its lifetime (exp - iat) is longer than 24 hours".to_owned());
        }
        Ok(())
    }

    fn check(
        &self,
        token: &IdToken,
        jwks: CoreJsonWebKeySet,
        nonce: Option<&Nonce>,
    ) -> Result<IdTokenClaims, ClaimsVerificationError> {
        let verifier = self.verifier(jwks);
        match nonce {
            Some(expected) => token.clone().into_claims(&verifier, expected),
            None => token
                .clone()
                .into_claims(&verifier, |_: Option<&Nonce>| Ok(())),
        }
    }

    /// Who the token names. The subject identifies the person; the name is only for showing:
    /// `preferred_username`, else `name`, else the email when the provider verified it, else
    /// the subject. An unverified email is never a name: anyone can claim one.
    pub fn person(&self, claims: &IdTokenClaims) -> Person {
        let subject = claims.subject().to_string();
        let verified_email = claims
            .email()
            .filter(|_| claims.email_verified() == Some(true))
            .map(|e| e.to_string());
        let name = claims
            .preferred_username()
            .map(|u| u.to_string())
            .or_else(|| {
                claims
                    .name()
                    .and_then(|n| n.get(None))
                    .map(|n| n.to_string())
            })
            .or(verified_email)
            .and_then(|n| crate::domain::person::display_name(&n))
            .unwrap_or_else(|| subject.clone());
        let groups = match claims.additional_claims().claims.get(&self.groups_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Person {
            issuer: claims.issuer().to_string(),
            subject,
            name,
            groups,
        }
    }
}
