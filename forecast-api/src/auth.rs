//! API keys: generation, storage as hashes, verification in constant time, scopes.
//!
//! A generated key reads `fk_<id>_<secret>`: the id finds the stored row, the secret is checked
//! against its SHA-256 (keys are 256 random bits, so a fast hash is enough; no password KDF
//! needed). The comparison is constant-time, and an unknown id costs the same comparison, so
//! response times say nothing about which keys exist. A bootstrap admin key from configuration
//! may have any form; only its hash is kept in memory.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{ApiKeyRecord, Store, StoreError, now_text};

pub const SCOPE_FORECASTS_WRITE: &str = "forecasts:write";
pub const SCOPE_ADMIN: &str = "admin";
pub const KNOWN_SCOPES: [&str; 2] = [SCOPE_FORECASTS_WRITE, SCOPE_ADMIN];
/// The principal of the configured bootstrap key.
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";

/// Who is calling, once the key or session checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `key:<API key id>` or `user:<username>`: what events and logs name as their actor.
    pub actor: String,
    pub scopes: Vec<String>,
    /// The session's user, when signed in with a session rather than a key.
    pub session: Option<crate::store::SessionRecord>,
}

impl Principal {
    pub fn of_key(id: &str, scopes: Vec<String>) -> Self {
        Self { actor: format!("key:{id}"), scopes, session: None }
    }

    /// A session acts with its user's role as it is now.
    pub fn of_session(session: crate::store::SessionRecord) -> Self {
        Self {
            actor: format!("user:{}", session.user.username),
            scopes: session.user.role.scopes(),
            session: Some(session),
        }
    }
}

impl Principal {
    /// `admin` implies every other scope.
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted == scope || granted == SCOPE_ADMIN)
    }
}

/// A freshly generated key: the full secret is shown once, the record is stored.
pub struct NewKey {
    pub secret: String,
    pub record: ApiKeyRecord,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn generate_key(name: &str, scopes: Vec<String>) -> NewKey {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    NewKey {
        secret: format!("fk_{id}_{secret}"),
        record: ApiKeyRecord {
            id,
            name: name.to_owned(),
            key_hash: hex::encode(sha256(secret.as_bytes())),
            scopes,
            created_at: now_text(),
            revoked_at: None,
        },
    }
}

/// Splits `fk_<id>_<secret>`.
fn parse_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix("fk_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_only(id) && hex_only(secret)).then_some((id, secret))
}

#[derive(Clone)]
pub struct KeyVerifier {
    store: Store,
    bootstrap_hash: Option<[u8; 32]>,
}

impl KeyVerifier {
    pub fn new(store: Store, bootstrap_key: &str) -> Self {
        let bootstrap_hash = (!bootstrap_key.is_empty()).then(|| sha256(bootstrap_key.as_bytes()));
        Self { store, bootstrap_hash }
    }

    /// The principal for a presented key, or `None` if it is unknown, wrong or revoked.
    pub async fn verify(&self, presented: &str) -> Result<Option<Principal>, StoreError> {
        if let Some((id, secret)) = parse_key(presented) {
            let record = self.store.find_api_key(id).await?;
            let stored = record
                .as_ref()
                .and_then(|record| hex::decode(&record.key_hash).ok())
                .unwrap_or_else(|| vec![0u8; 32]);
            let matches: bool = sha256(secret.as_bytes()).ct_eq(stored.as_slice()).into();
            return Ok(record
                .filter(|record| matches && record.revoked_at.is_none())
                .map(|record| Principal::of_key(&record.id, record.scopes)));
        }
        if let Some(expected) = &self.bootstrap_hash {
            let matches: bool = sha256(presented.as_bytes()).ct_eq(expected).into();
            if matches {
                return Ok(Some(Principal::of_key(BOOTSTRAP_KEY_ID, vec![SCOPE_ADMIN.into()])));
            }
        }
        Ok(None)
    }
}

/// Without a configured bootstrap key and without any active admin key, generates one, stores
/// its hash and returns the secret so that it can be shown once.
pub async fn ensure_admin_key(store: &Store, configured: &str) -> Result<Option<String>, StoreError> {
    if !configured.is_empty() || store.has_active_admin_key().await? {
        return Ok(None);
    }
    let key = generate_key("bootstrap admin", vec![SCOPE_ADMIN.into()]);
    store.insert_api_key(&key.record, None).await?;
    Ok(Some(key.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_their_secret_only() {
        let key = generate_key("ci", vec![SCOPE_FORECASTS_WRITE.into()]);
        let (id, secret) = parse_key(&key.secret).unwrap();
        assert_eq!(id, key.record.id);
        assert_eq!(hex::encode(sha256(secret.as_bytes())), key.record.key_hash);
        assert!(!key.record.key_hash.contains(secret));
        assert_eq!(parse_key("fk_zz_00"), None);
        assert_eq!(parse_key("Bearer x"), None);
    }

    #[test]
    fn admin_implies_every_scope() {
        let admin = Principal::of_key("a", vec![SCOPE_ADMIN.into()]);
        let writer = Principal::of_key("w", vec![SCOPE_FORECASTS_WRITE.into()]);
        assert!(admin.allows(SCOPE_FORECASTS_WRITE));
        assert!(writer.allows(SCOPE_FORECASTS_WRITE));
        assert!(!writer.allows(SCOPE_ADMIN));
    }
}
