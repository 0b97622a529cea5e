//! Bearer tokens already verified, so that an API caller's every request does not check the
//! same RS256 signature and claims again.
//!
//! Only a token that passed every check ([`super::Verifier::verify`]: signature, issuer,
//! audience, expiry, algorithm, authorized party, issue time, lifetime, admission) is put
//! here, keyed by the SHA-256 of its text; the token itself is never kept. An entry serves
//! until the token's `exp` by the broker's clock, and for at most [`MAX_AGE_MS`] after it was
//! verified, so that a key the issuer stopped publishing stops working soon; past either, the
//! token is checked again in full (and an expired one is refused with the verifier's own
//! reason). The cache holds at most [`CAPACITY`] entries.

use std::collections::HashMap;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::domain::Person;

/// The most tokens remembered at once: enough for every API caller of a busy broker, small
/// enough (a few MB) that a flood of distinct valid tokens cannot grow memory without bound.
pub const CAPACITY: usize = 10_000;
/// How long a verified token is trusted without checking it again.
pub const MAX_AGE_MS: Millis = 5 * 60_000;

pub type Key = [u8; 32];

struct Entry {
    person: Person,
    /// Until when (exclusive) this entry may answer: the earlier of `exp` and the max age.
    until: Millis,
}

#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<Key, Entry>>,
}

impl TokenCache {
    /// The key a token is remembered by.
    pub fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The person a token verified earlier names, if it still may be trusted at `now`.
    pub fn get(&self, key: &Key, now: Millis) -> Option<Person> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|entry| now < entry.until)
            .map(|entry| entry.person.clone())
    }

    /// Remembers a token that passed every check at `now` and expires at `expires_at`.
    pub fn insert(&self, key: Key, person: Person, now: Millis, expires_at: Millis) {
        let until = expires_at.min(now.saturating_add(MAX_AGE_MS));
        if until <= now {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, entry| now < entry.until);
            if entries.len() >= CAPACITY {
                // Every entry is live: forget them all rather than track recency; the callers
                // are checked in full once more.
                entries.clear();
            }
        }
        entries.insert(key, Entry { person, until });
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(subject: &str) -> Person {
        Person {
            issuer: "https://issuer.example".into(),
            subject: subject.into(),
            name: subject.into(),
            groups: vec!["approvers".into()],
        }
    }

    #[test]
    fn an_entry_serves_until_the_token_expires_and_not_a_moment_longer() {
        let cache = TokenCache::default();
        let key = TokenCache::key("header.claims.signature");
        cache.insert(key, person("bob"), 1_000, 61_000);
        assert_eq!(
            cache.get(&key, 1_000).map(|p| p.subject),
            Some("bob".into())
        );
        assert_eq!(
            cache.get(&key, 60_999).map(|p| p.subject),
            Some("bob".into())
        );
        assert!(cache.get(&key, 61_000).is_none(), "expired at exp");
        assert!(cache.get(&TokenCache::key("another"), 1_000).is_none());
    }

    #[test]
    fn an_entry_serves_at_most_the_max_age_even_for_a_long_lived_token() {
        let cache = TokenCache::default();
        let key = TokenCache::key("t");
        cache.insert(key, person("bob"), 0, 24 * 3_600_000);
        assert!(cache.get(&key, MAX_AGE_MS - 1).is_some());
        assert!(cache.get(&key, MAX_AGE_MS).is_none());
    }

    #[test]
    fn an_already_expired_token_is_not_remembered() {
        let cache = TokenCache::default();
        let key = TokenCache::key("t");
        cache.insert(key, person("bob"), 5_000, 5_000);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let cache = TokenCache::default();
        for i in 0..CAPACITY + 10 {
            let key = TokenCache::key(&format!("token-{i}"));
            cache.insert(key, person("bob"), 0, 60_000);
        }
        assert!(cache.len() <= CAPACITY, "{}", cache.len());
        let last = TokenCache::key(&format!("token-{}", CAPACITY + 9));
        assert!(cache.get(&last, 1).is_some(), "the newest is kept");
    }

    #[test]
    fn expired_entries_make_room_before_live_ones_are_dropped() {
        let cache = TokenCache::default();
        for i in 0..CAPACITY - 1 {
            cache.insert(TokenCache::key(&format!("old-{i}")), person("a"), 0, 10);
        }
        let live = TokenCache::key("live");
        cache.insert(live, person("bob"), 0, 60_000);
        cache.insert(TokenCache::key("new"), person("carol"), 20, 60_000);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&live, 20).is_some());
    }
}
