//! Who may read token channels: JWT verification, where tokens are read from, one-time tickets.
//!
//! A token is an HS256 JWT (shared secret) or an RS256/ES256 JWT (public key); each key is used
//! only with its own algorithm, so `alg: none` and algorithm confusion (an HS256 token signed
//! with the public key) are refused. `exp` is required; `nbf`, `aud` and `iss` are checked when
//! configured, and then required. A token living longer than `auth.max_token_lifetime_secs` is
//! refused. Refusals say what is wrong with the token in the relay's words, not the JWT
//! library's. The `subscribe` claim lists the glob patterns the bearer may read. A token with a
//! `jti` is a one-time ticket: once the stream is about to be served, the relay claims the `jti`
//! in Redis (`SET NX EX`), and refuses it the second time. Tokens are never logged.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use protocol::claims::RelayClaims;
use protocol::glob::Pattern;

use crate::commands::{CommandError, SharedConnection};
use crate::settings::AuthSettings;
use service::config::ConfigError;

/// Patterns in a token's `subscribe` claim, at most.
const MAX_GRANTS: usize = 64;

/// What a verified token allows.
#[derive(Debug, Clone)]
pub struct Grant {
    pub patterns: Arc<[Pattern]>,
    /// Unix seconds at which the token expires (and its stream is closed).
    pub expires_at: i64,
    /// Set for a one-time ticket, to [`TokenVerifier::claim`] before its stream is served.
    pub ticket: Option<Ticket>,
}

/// A one-time ticket's id and expiry.
#[derive(Debug, Clone)]
pub struct Ticket {
    jti: String,
    exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("this ticket was already used")]
    TicketReused,
    #[error("cannot check the ticket: {0}")]
    Unavailable(CommandError),
}

/// What is wrong with a token, in words that do not depend on the JWT library.
fn refusal(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAudience => "the token is for another audience (aud)".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer (iss)".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm is not accepted".into()
        }
        // Its claims are not what a relay token holds (a `subscribe` list, numeric times).
        ErrorKind::Json(error) => match error.to_string().strip_prefix("missing field `") {
            Some(rest) => format!("the token has no {} claim", rest.split('`').next().unwrap_or_default()),
            None => "the token's claims are not a relay token's".into(),
        },
        _ => "the token is not a well-formed JWT".into(),
    }
}

/// Seconds since the Unix epoch, now: the clock of `exp`.
pub fn unix_now_secs() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

pub struct TokenVerifier {
    hs256: Option<(DecodingKey, Validation)>,
    public_key: Option<(DecodingKey, Validation)>,
    cookie_name: String,
    ticket_prefix: String,
    leeway_secs: u64,
    max_lifetime_secs: u64,
    redis: Arc<SharedConnection>,
}

impl TokenVerifier {
    pub fn new(settings: &AuthSettings, redis: Arc<SharedConnection>) -> Result<Self, ConfigError> {
        let validation = |algorithm: Algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = settings.leeway_secs;
            validation.validate_nbf = true;
            let mut required = vec!["exp"];
            if settings.audience.is_empty() {
                validation.validate_aud = false;
            } else {
                validation.set_audience(&[&settings.audience]);
                required.push("aud");
            }
            if !settings.issuer.is_empty() {
                validation.set_issuer(&[&settings.issuer]);
                required.push("iss");
            }
            validation.set_required_spec_claims(&required);
            validation
        };
        let hs256 = (!settings.jwt_secret.is_empty()).then(|| {
            (DecodingKey::from_secret(settings.jwt_secret.as_bytes()), validation(Algorithm::HS256))
        });
        let public_key =
            settings.public_key()?.map(|(decoding_key, algorithm)| (decoding_key, validation(algorithm)));
        Ok(Self {
            hs256,
            public_key,
            cookie_name: settings.cookie_name.clone(),
            ticket_prefix: settings.ticket_prefix.clone(),
            leeway_secs: settings.leeway_secs,
            max_lifetime_secs: settings.max_token_lifetime_secs,
            redis,
        })
    }

    /// The token of a request: `Authorization: Bearer`, else the configured cookie, else the
    /// `access_token` query parameter.
    pub fn token_from(&self, headers: &http::HeaderMap, query: &str) -> Option<String> {
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|v| v.trim().to_owned());
        let cookie = || {
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == self.cookie_name)
                .map(|(_, value)| value.trim().to_owned())
        };
        let query = || {
            form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "access_token")
                .map(|(_, v)| v.into_owned())
        };
        bearer.or_else(cookie).or_else(query).filter(|token| !token.is_empty())
    }

    /// Verifies a token; a ticket is claimed separately ([`Self::claim`]).
    pub async fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            AuthError::Invalid("the token is not a well-formed JWT with an accepted algorithm".into())
        })?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            alg => self.public_key.as_ref().filter(|(_, validation)| validation.algorithms.contains(&alg)),
        }
        .ok_or_else(|| AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)))?;
        let claims = jsonwebtoken::decode::<RelayClaims>(token, key, validation)
            .map_err(|e| AuthError::Invalid(refusal(&e)))?
            .claims;
        let lifetime = claims.exp.saturating_sub(unix_now_secs());
        if self.max_lifetime_secs > 0
            && lifetime
                > (self.max_lifetime_secs.saturating_add(self.leeway_secs)).min(i64::MAX as u64) as i64
        {
            return Err(AuthError::Invalid(format!(
                "the token expires in {lifetime} s; at most {} s are accepted",
                self.max_lifetime_secs
            )));
        }
        if claims.subscribe.len() > MAX_GRANTS {
            return Err(AuthError::Invalid(format!("more than {MAX_GRANTS} subscribe patterns")));
        }
        let patterns = claims
            .subscribe
            .iter()
            .map(|p| {
                Pattern::parse(p).map_err(|e| AuthError::Invalid(format!("subscribe pattern {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ticket = claims.jti.map(|jti| Ticket { jti, exp: claims.exp });
        Ok(Grant { patterns: patterns.into(), expires_at: claims.exp, ticket })
    }

    /// Claims a one-time ticket: once the stream it opens is certain to be served, so that a
    /// request refused for another reason (or a `HEAD`) does not use it up.
    pub async fn claim(&self, ticket: &Ticket) -> Result<(), AuthError> {
        // Remember the ticket for as long as it could still be accepted.
        let remaining = ticket.exp.saturating_sub(unix_now_secs()).saturating_add(self.leeway_secs as i64);
        let mut command = redis::cmd("SET");
        command
            .arg(format!("{}{}", self.ticket_prefix, ticket.jti))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(remaining.max(1));
        let claimed: Option<String> = self.redis.query_once(command).await.map_err(AuthError::Unavailable)?;
        if claimed.is_none() {
            return Err(AuthError::TicketReused);
        }
        Ok(())
    }
}
