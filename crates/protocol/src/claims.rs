//! The claims of a relay token: what forecast-api signs and the relay verifies.
//!
//! The `subscribe` claim lists the glob patterns the bearer may read; a `jti` makes the token a
//! one-time ticket. Signing and checking the signature, `exp`, `aud` and `iss` are each side's
//! business (the relay also accepts tokens from other issuers, which may leave out what
//! forecast-api always sets).

use serde::{Deserialize, Serialize};

/// The issuer forecast-api writes in its tokens.
pub const ISSUER: &str = "forecast-api";
/// The audience forecast-api's tokens are for.
pub const AUDIENCE: &str = "sse-relay";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayClaims {
    /// Who the token was minted for (forecast-api: the API key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Glob patterns of the channels the bearer may read.
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Unix seconds; required.
    pub exp: i64,
    /// Present on one-time tickets: the relay accepts a ticket once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_of_another_issuer_needs_only_exp() {
        let claims: RelayClaims = serde_json::from_str(r#"{"exp":5}"#).unwrap();
        assert_eq!(claims.exp, 5);
        assert!(claims.subscribe.is_empty());
        assert!(serde_json::from_str::<RelayClaims>(r#"{"subscribe":["a.*"]}"#).is_err(), "exp is required");
    }

    #[test]
    fn unset_claims_are_left_out() {
        let claims = RelayClaims {
            sub: None,
            subscribe: vec!["admin.*".into()],
            iss: None,
            aud: None,
            iat: None,
            exp: 9,
            jti: None,
        };
        assert_eq!(serde_json::to_string(&claims).unwrap(), r#"{"subscribe":["admin.*"],"exp":9}"#);
    }
}
