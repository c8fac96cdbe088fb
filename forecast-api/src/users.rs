//! User accounts and their sessions: roles, password hashing, session secrets, and the limits
//! on signing in.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults, OWASP's recommendation:
//! 19 MiB of memory, 2 passes, 1 lane, a 16-byte random salt), stored as PHC strings so that
//! the parameters travel with each hash. Signing in as an unknown user verifies the password
//! against a hash made at start with the same parameters, so both failures take the same time
//! and give the same answer.
//!
//! A session is a 256-bit random secret in an HttpOnly cookie; the database keeps only its
//! SHA-256 (as for API keys: the secret is random, a fast hash is enough), with its expiry and
//! revocation. What a session may do follows its user's role at each request.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, password_hash::rand_core::OsRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::{SCOPE_ADMIN, SCOPE_FORECASTS_WRITE};

/// What a user may do: `viewer` reads, `editor` also writes forecasts, `admin` also manages
/// users and API keys and reads the admin feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Viewer, Self::Editor, Self::Admin].into_iter().find(|role| role.as_str() == text)
    }

    /// The API key scopes this role amounts to: a session and a key give the same rights.
    pub fn scopes(self) -> Vec<String> {
        match self {
            Self::Viewer => Vec::new(),
            Self::Editor => vec![SCOPE_FORECASTS_WRITE.into()],
            Self::Admin => vec![SCOPE_ADMIN.into()],
        }
    }
}

/// Usernames: 3–64 characters, lower-case letters, digits and `._-`, starting with a letter or
/// digit (what a log line, a URL and an event show without escaping).
pub fn username_problem(username: &str) -> Option<&'static str> {
    let valid = (3..=64).contains(&username.len())
        && username.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && username.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    (!valid).then_some(
        "must be 3-64 characters: lower-case letters, digits and ._- (starting with a letter or digit)",
    )
}

pub const MIN_PASSWORD_CHARS: usize = 10;
/// Hashing has a cost per byte: longer passwords are refused rather than hashed.
pub const MAX_PASSWORD_CHARS: usize = 256;

pub fn password_problem(password: &str) -> Option<String> {
    let chars = password.chars().count();
    (!(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars))
        .then(|| format!("must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters"))
}

/// Claims: up to 32 names (1–64 characters of letters, digits and `._:-`) with string values of
/// at most 256 characters.
pub fn claims_problem(claims: &HashMap<String, String>) -> Option<&'static str> {
    let name_ok = |name: &str| {
        (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    };
    let value_ok = |value: &str| value.chars().count() <= 256 && !value.chars().any(char::is_control);
    let valid = claims.len() <= 32 && claims.iter().all(|(name, value)| name_ok(name) && value_ok(value));
    (!valid).then_some(
        "at most 32 claims; names 1-64 characters of letters, digits and ._:-; values at most 256 characters without control characters",
    )
}

/// Hashes and verifies passwords (Argon2id), on the blocking pool: a hash takes tens of
/// milliseconds of CPU.
#[derive(Clone)]
pub struct Passwords {
    /// A hash of a random password, verified against when the user is unknown.
    decoy: String,
}

impl Passwords {
    pub fn new() -> Self {
        let decoy = hex::encode(rand::random::<[u8; 16]>());
        Self { decoy: hash_blocking(&decoy).expect("hashing a random password") }
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
    }

    /// Whether `password` is the one `stored` was made from; with no stored hash (an unknown
    /// user), the same work against the decoy, and false.
    pub async fn verify(&self, password: String, stored: Option<String>) -> anyhow::Result<bool> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.decoy.clone());
        let matches = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|error| anyhow::anyhow!("stored hash: {error}"))?;
            Ok::<_, anyhow::Error>(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await??;
        Ok(known && matches)
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| anyhow::anyhow!("cannot hash the password: {error}"))?
        .to_string())
}

/// A new session's secret (for the cookie) and its hash (for the database).
pub fn new_session_secret() -> (String, String) {
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let hash = session_hash(&secret);
    (secret, hash)
}

pub fn session_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Sign-in attempts per account and per client address within a sliding window; beyond
/// either limit, attempts are refused without checking the password. In memory: each replica
/// counts its own.
pub struct SignInLimiter {
    per_account: usize,
    per_address: usize,
    window: Duration,
    attempts: Mutex<Attempts>,
}

#[derive(Default)]
struct Attempts {
    accounts: HashMap<String, VecDeque<Instant>>,
    addresses: HashMap<IpAddr, VecDeque<Instant>>,
}

impl SignInLimiter {
    pub fn new(per_account: usize, per_address: usize, window: Duration) -> Self {
        Self { per_account, per_address, window, attempts: Mutex::default() }
    }

    /// Counts an attempt for `username` from `address`, or says how long until one is allowed.
    pub fn attempt(&self, username: &str, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.window;
        let Attempts { accounts, addresses } = &mut *attempts;
        // Forget what left the window, so that the maps hold only recent callers.
        for times in accounts.values_mut().chain(addresses.values_mut()) {
            while times.front().is_some_and(|at| now.duration_since(*at) >= window) {
                times.pop_front();
            }
        }
        accounts.retain(|_, times| !times.is_empty());
        addresses.retain(|_, times| !times.is_empty());
        let account = accounts.entry(username.to_owned()).or_default();
        let address_times = addresses.entry(address).or_default();
        let wait = |times: &VecDeque<Instant>, limit: usize| {
            (times.len() >= limit)
                .then(|| window.saturating_sub(now.duration_since(times[times.len() - limit])))
        };
        if let Some(wait) = wait(account, self.per_account).or_else(|| wait(address_times, self.per_address))
        {
            return Err(wait.max(Duration::from_secs(1)));
        }
        account.push_back(now);
        address_times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_against_their_argon2id_hash_only() {
        let passwords = Passwords::new();
        let hash = passwords.hash("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(passwords.verify("correct horse battery".into(), Some(hash.clone())).await.unwrap());
        assert!(!passwords.verify("wrong horse battery".into(), Some(hash)).await.unwrap());
        assert!(!passwords.verify("correct horse battery".into(), None).await.unwrap());
    }

    #[test]
    fn roles_amount_to_the_scopes_of_keys() {
        assert!(Role::Viewer.scopes().is_empty());
        assert_eq!(Role::Editor.scopes(), [SCOPE_FORECASTS_WRITE]);
        assert_eq!(Role::Admin.scopes(), [SCOPE_ADMIN]);
        assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Admin);
        assert_eq!(Role::parse("editor"), Some(Role::Editor));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn usernames_passwords_and_claims_are_bounded() {
        assert_eq!(username_problem("alice"), None);
        assert_eq!(username_problem("a.b-c_9"), None);
        for bad in ["al", "Alice", "-alice", "alice smith", "ålice", &"a".repeat(65)] {
            assert!(username_problem(bad).is_some(), "{bad}");
        }
        assert!(password_problem("short").is_some());
        assert!(password_problem(&"x".repeat(257)).is_some());
        assert_eq!(password_problem("long enough pass"), None);
        let claims = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<HashMap<_, _>>()
        };
        assert_eq!(claims_problem(&claims(&[("region", "eu"), ("team:ops", "on call")])), None);
        assert!(claims_problem(&claims(&[("bad name", "x")])).is_some());
        assert!(claims_problem(&claims(&[("x", "line\nbreak")])).is_some());
    }

    #[test]
    fn sign_in_attempts_are_limited_per_account_and_per_address() {
        let limiter = SignInLimiter::new(3, 5, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            limiter.attempt("alice", a).unwrap();
        }
        let wait = limiter.attempt("alice", b).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait >= Duration::from_secs(1));
        limiter.attempt("bob", a).unwrap();
        limiter.attempt("carol", a).unwrap();
        assert!(limiter.attempt("dave", a).is_err(), "the address reached its limit");
        limiter.attempt("dave", b).unwrap();
    }

    #[test]
    fn session_secrets_are_random_and_stored_hashed() {
        let (secret, hash) = new_session_secret();
        let (other, _) = new_session_secret();
        assert_ne!(secret, other);
        assert_eq!(secret.len(), 64);
        assert_eq!(session_hash(&secret), hash);
        assert_ne!(hash, secret);
    }
}
