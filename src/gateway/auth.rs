//! Tokens: JWT verification (HS256 with `JWT_SECRET` by default, RS256/ES256
//! with a PEM public key), with `exp` required and honoured with `nbf` under
//! `JWT_LEEWAY`, and `aud`/`iss` required and checked when configured. Only the configured algorithm is accepted, so `alg: none` and
//! algorithm confusion are refused.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::{ConfigError, JwtConfig};
use crate::settings::env;

/// The verified claims of a token.
#[derive(Clone, Debug)]
pub struct Claims {
    /// `sub` as a string (numbers are compared as strings).
    pub sub: String,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
    /// Whether `role` is `service`: a trusted backend.
    pub service: bool,
    /// Every claim, for the SQL authorization rule.
    pub all: Value,
}

/// Why a token was refused. Messages never include the token or the key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token in the query or the `Authorization` header.
    #[error("missing token")]
    Missing,
    /// The token is expired.
    #[error("token expired")]
    Expired,
    /// The token was refused for another reason.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Verifies tokens against the configured key and rules.
pub struct Verifier {
    /// The key for the configured algorithm.
    key: DecodingKey,
    /// Algorithm, required claims, audience and issuer.
    validation: Validation,
}

impl Verifier {
    /// Builds a verifier from the configuration.
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        let key = match (&config.secret, &config.public_key_pem) {
            (_, Some(pem)) => match config.algorithm {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                _ => {
                    return Err(ConfigError::new(
                        env::JWT_ALGORITHM,
                        "a public key needs RS*, PS*, ES* or EdDSA",
                    ))
                }
            }
            .map_err(|_| {
                ConfigError::new(
                    env::JWT_PUBLIC_KEY_FILE,
                    "not a PEM public key for the configured algorithm",
                )
            })?,
            (Some(secret), None) => DecodingKey::from_secret(secret.expose().as_bytes()),
            (None, None) => return Err(ConfigError::new(env::JWT_SECRET, "not set")),
        };
        let mut validation = Validation::new(config.algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // jsonwebtoken only compares the claims it is told are required:
        // a configured audience or issuer must also be present.
        let mut required = HashSet::from(["exp".to_string()]);
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.insert("iss".into());
        }
        validation.required_spec_claims = required;
        Ok(Self { key, validation })
    }

    /// Verifies a token and reads its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::Invalid("algorithm not accepted")
            }
            ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(match claim.as_str() {
                "aud" => "token has no aud claim",
                "iss" => "token has no iss claim",
                _ => "token has no exp claim",
            }),
            ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
            ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
            ErrorKind::ImmatureSignature => AuthError::Invalid("token not valid yet"),
            _ => AuthError::Invalid("invalid token"),
        })?;
        let claims = data.claims;
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(AuthError::Invalid("token has no sub claim")),
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::Invalid("token has no exp claim"))?;
        let service = claims.get("role").and_then(Value::as_str) == Some("service");
        Ok(Claims {
            sub,
            exp,
            service,
            all: Value::Object(claims),
        })
    }
}

/// The token of a request: `?token=` or `Authorization: Bearer`.
pub fn token_from(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    from_header
        .or_else(|| {
            query?.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key == "token").then(|| percent_decode(value))
            })
        })
        .filter(|t| !t.is_empty())
}

/// Decodes `%XX` escapes of a query parameter's value.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "unit-test-secret-0123456789";

    fn verifier() -> Verifier {
        verifier_with(None, None, 0)
    }

    fn verifier_with(audience: Option<&str>, issuer: Option<&str>, leeway: u64) -> Verifier {
        Verifier::new(&JwtConfig {
            algorithm: Algorithm::HS256,
            secret: Some(Secret::new(SECRET)),
            public_key_pem: None,
            audience: audience.map(str::to_string),
            issuer: issuer.map(str::to_string),
            leeway: std::time::Duration::from_secs(leeway),
        })
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: Value, alg: Algorithm, secret: &str) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn good_tokens_verify_and_numeric_subs_become_strings() {
        let claims = verifier()
            .verify(&token(
                json!({"sub": 42, "exp": now() + 60}),
                Algorithm::HS256,
                SECRET,
            ))
            .unwrap();
        assert_eq!(claims.sub, "42");
        assert!(!claims.service);
        let service = verifier()
            .verify(&token(
                json!({"sub": "backend", "role": "service", "exp": now() + 60}),
                Algorithm::HS256,
                SECRET,
            ))
            .unwrap();
        assert!(service.service);
    }

    #[test]
    fn a_configured_audience_and_issuer_are_required_not_just_compared() {
        let v = verifier_with(Some("app"), Some("https://auth.example"), 0);
        let claims = |extra: Value| {
            let mut all = json!({"sub": "1", "exp": now() + 60});
            all.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            token(all, Algorithm::HS256, SECRET)
        };
        let both = claims(json!({"aud": "app", "iss": "https://auth.example"}));
        assert!(v.verify(&both).is_ok());
        let no_aud = claims(json!({"iss": "https://auth.example"}));
        assert!(matches!(
            v.verify(&no_aud),
            Err(AuthError::Invalid("token has no aud claim"))
        ));
        let no_iss = claims(json!({"aud": "app"}));
        assert!(matches!(
            v.verify(&no_iss),
            Err(AuthError::Invalid("token has no iss claim"))
        ));
        let wrong_aud = claims(json!({"aud": "other", "iss": "https://auth.example"}));
        assert!(matches!(
            v.verify(&wrong_aud),
            Err(AuthError::Invalid("wrong audience"))
        ));
    }

    #[test]
    fn not_before_is_honoured_under_the_leeway() {
        let future = token(
            json!({"sub": "1", "exp": now() + 600, "nbf": now() + 30}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(matches!(
            verifier().verify(&future),
            Err(AuthError::Invalid("token not valid yet"))
        ));
        assert!(verifier_with(None, None, 60).verify(&future).is_ok());
        let past = token(
            json!({"sub": "1", "exp": now() + 600, "nbf": now() - 30}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(verifier().verify(&past).is_ok());
    }

    #[test]
    fn attacks_are_refused() {
        let v = verifier();
        let expired = token(
            json!({"sub": "1", "exp": now() - 5}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(matches!(v.verify(&expired), Err(AuthError::Expired)));
        let forged = token(
            json!({"sub": "1", "exp": now() + 60}),
            Algorithm::HS256,
            "another-secret-entirely",
        );
        assert!(matches!(
            v.verify(&forged),
            Err(AuthError::Invalid("bad signature"))
        ));
        let other_alg = token(
            json!({"sub": "1", "exp": now() + 60}),
            Algorithm::HS384,
            SECRET,
        );
        assert!(matches!(
            v.verify(&other_alg),
            Err(AuthError::Invalid("algorithm not accepted"))
        ));
        let no_exp = token(json!({"sub": "1"}), Algorithm::HS256, SECRET);
        assert!(matches!(
            v.verify(&no_exp),
            Err(AuthError::Invalid("token has no exp claim"))
        ));
        // alg: none, unsigned.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(format!(r#"{{"sub":"1","exp":{}}}"#, now() + 60))
        );
        assert!(v.verify(&none).is_err());
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            token_from(&headers, Some("a=1&token=abc%2Edef")),
            Some("abc.def".into())
        );
        headers.insert(http::header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(token_from(&headers, None), Some("xyz".into()));
        assert_eq!(token_from(&http::HeaderMap::new(), Some("token=")), None);
    }
}
