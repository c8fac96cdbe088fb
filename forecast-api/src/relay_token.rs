//! Short-lived HS256 tokens that let an admin dashboard read token-only relay channels.
//!
//! The relay verifies them with the same shared secret (its `auth.jwt_secret`); the
//! `subscribe` claim lists the glob patterns the bearer may read.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use protocol::claims::{AUDIENCE, ISSUER, RelayClaims};

/// Signs claims for `subject` valid for `ttl_secs` from now; `once` makes it a one-time ticket.
pub fn mint(
    secret: &str,
    subject: &str,
    subscribe: Vec<String>,
    ttl_secs: u64,
    once: bool,
) -> Result<(String, RelayClaims), jsonwebtoken::errors::Error> {
    let now = chrono::Utc::now().timestamp();
    let claims = RelayClaims {
        sub: Some(subject.to_owned()),
        subscribe,
        iss: Some(ISSUER.into()),
        aud: Some(AUDIENCE.into()),
        iat: Some(now),
        exp: now + i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2),
        jti: once.then(|| uuid::Uuid::new_v4().to_string()),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?;
    Ok((token, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn minted_tokens_verify_with_the_shared_secret_only() {
        let secret = "0123456789abcdef0123456789abcdef";
        let (token, claims) = mint(secret, "key1", vec!["admin.*".into()], 60, false).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        let decoded = jsonwebtoken::decode::<RelayClaims>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims, claims);
        assert!(
            jsonwebtoken::decode::<RelayClaims>(
                &token,
                &DecodingKey::from_secret(b"another secret of 32 chars ....."),
                &validation
            )
            .is_err()
        );
    }
}
