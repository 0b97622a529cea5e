//! Browser sign-in: OpenID Connect authorization code flow with PKCE (S256), state and nonce,
//! through the openidconnect crate.

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AuthorizationCode, Client, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdTokenFields, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse as _,
};

use super::http_client;
use super::oidc::{AuthError, OtherClaims, Verifier};
use crate::domain::Person;

type Fields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Where to send the browser, and what the callback must find again.
pub struct Started {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// Who signed in, and when they last authenticated at the provider if its token says
/// (`auth_time`, in milliseconds).
pub struct SignedIn {
    pub person: Person,
    pub auth_time: Option<crate::clock::Millis>,
}

/// Why a sign-in did not complete, worded for the person in front of the browser.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider cannot be reached: {0}")]
    Provider(String),
    #[error("the identity provider refused the sign-in: {0}")]
    Exchange(String),
    #[error("the identity provider's answer did not check out: {0}")]
    Token(String),
    /// A valid sign-in of someone this broker does not let in.
    #[error("{0}")]
    NotAdmitted(String),
}

pub struct Login {
    redirect_uri: RedirectUrl,
    client_secret: Option<ClientSecret>,
}

impl Login {
    pub fn new(callback_url: &str, client_secret: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            redirect_uri: RedirectUrl::new(callback_url.to_owned())?,
            client_secret: client_secret.map(ClientSecret::new),
        })
    }

    async fn client(&self, verifier: &Verifier) -> Result<OidcClient, LoginError> {
        let metadata = verifier
            .provider(false)
            .await
            .map_err(|e| LoginError::Provider(e.to_string()))?;
        Ok(OidcClient::from_provider_metadata(
            (*metadata).clone(),
            verifier.client_id().clone(),
            self.client_secret.clone(),
        )
        .set_redirect_uri(self.redirect_uri.clone()))
    }

    /// A fresh state, nonce and PKCE pair, and the provider URL that carries them. With
    /// `max_age`, the provider is asked to authenticate the person again unless they did
    /// within it.
    pub async fn start(
        &self,
        verifier: &Verifier,
        max_age: Option<std::time::Duration>,
    ) -> Result<Started, LoginError> {
        let client = self.client(verifier).await?;
        let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if let Some(max_age) = max_age {
            request = request.set_max_age(max_age);
        }
        let (url, state, nonce) = request.url();
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: pkce_verifier.secret().clone(),
        })
    }

    /// Exchanges the code (with the PKCE verifier) and checks the ID token, nonce included.
    pub async fn finish(
        &self,
        verifier: &Verifier,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<SignedIn, LoginError> {
        let client = self.client(verifier).await?;
        let http = verifier.http().clone();
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| LoginError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&move |req| http_client::send(http.clone(), req))
            .await
            .map_err(|e| LoginError::Exchange(describe_exchange_error(&e)))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| LoginError::Token("no ID token in the answer".into()))?;
        let (person, auth_time) = verifier
            .verify_sign_in(id_token, Some(&Nonce::new(nonce.to_owned())))
            .await
            .map_err(|e| match e {
                AuthError::Invalid(why) => LoginError::Token(why),
                AuthError::ProviderUnavailable(why) => LoginError::Provider(why),
                AuthError::NotAdmitted(why) => LoginError::NotAdmitted(why),
            })?;
        Ok(SignedIn {
            person,
            auth_time: auth_time.map(|t| t.timestamp_millis()),
        })
    }
}

fn describe_exchange_error<E: std::error::Error>(
    error: &openidconnect::RequestTokenError<E, StandardErrorResponse<CoreErrorResponseType>>,
) -> String {
    match error {
        openidconnect::RequestTokenError::ServerResponse(response) => {
            let mut text = response.error().to_string();
            if let Some(description) = response.error_description() {
                text.push_str(": ");
                text.push_str(description);
            }
            text
        }
        other => other.to_string(),
    }
}
