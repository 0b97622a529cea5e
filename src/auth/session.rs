//! Sessions and CSRF tokens for the browser. A session id is 256 random bits in an HttpOnly
//! cookie; the database keeps only its SHA-256, with the person and a CSRF token.
//!
//! Hand-written rather than tower-sessions: its stores are per database and none speaks
//! sqlx's `Any` driver, which is how this broker serves SQLite and PostgreSQL from one code path.

use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::domain::digest::sha256_hex;

/// How long a sign-in may take between leaving for the provider and coming back.
pub const LOGIN_MS: i64 = 10 * 60 * 1000;

/// The session cookie's name: with `__Host-` when served over https, which pins it to this
/// host, path `/`, and `Secure`.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-bg_session"
    } else {
        "bg_session"
    }
}

/// The cookie that ties a sign-in in flight to the browser that started it (login CSRF).
pub fn login_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-bg_login"
    } else {
        "bg_login"
    }
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_id(id: &str) -> String {
    sha256_hex(id.as_bytes())
}

/// Compares in constant time so the token cannot be guessed byte by byte.
pub fn tokens_match(expected: &str, given: &str) -> bool {
    !expected.is_empty() && expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_compared_exactly() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(tokens_match(&a, &a));
        assert!(!tokens_match(&a, &b));
        assert!(!tokens_match("", ""));
        assert!(!tokens_match(&a, &a[..42]));
    }
}
