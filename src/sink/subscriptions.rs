//! Browsers' Web Push subscriptions (`realtime.push_subscriptions`): what
//! `POST /v1/push/subscriptions` checks and stores, and what the push sink
//! reads and removes.

use deadpool_postgres::Pool;
use serde::Deserialize;

use super::client::{check_target, Reach};
use super::push_crypto::SubscriptionKeys;
use crate::config::PushConfig;
use crate::db::DbError;

/// A browser's `PushSubscription` JSON, as `subscription.toJSON()` gives
/// it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionJson {
    /// The push service URL to POST messages to.
    #[schema(max_length = 2048, pattern = "^https?://[^\\x00-\\x20]+$")]
    pub endpoint: String,
    /// When the subscription expires (milliseconds since the epoch), if
    /// the browser says so. Not used.
    #[serde(default, rename = "expirationTime")]
    #[allow(
        dead_code,
        reason = "accepted as browsers send it; the push service's 404/410 is what ends a subscription"
    )]
    pub expiration_time: Option<f64>,
    /// The subscription's keys.
    pub keys: KeysJson,
}

/// `keys` of a `PushSubscription`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct KeysJson {
    /// base64url of the browser's P-256 public key (65 bytes, an
    /// uncompressed point on the curve).
    #[schema(pattern = "^B[A-P][A-Za-z0-9_-]{84}[AEIMQUYcgkosw048]=?$")]
    pub p256dh: String,
    /// base64url of the 16-byte authentication secret.
    #[schema(pattern = "^[A-Za-z0-9_-]{21}[AQgw](==)?$")]
    pub auth: String,
}

/// Why a subscription is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The endpoint or the keys are unusable (400).
    #[error("{0}")]
    Invalid(String),
    /// The user has as many subscriptions as allowed (429).
    #[error("this user already has {0} push subscriptions: remove one first")]
    Capped(usize),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Which push services subscriptions may use.
#[derive(Clone, Debug)]
pub struct Origins {
    /// Listed origins (`scheme://host[:port]`); empty for any https one.
    listed: Vec<String>,
}

impl Origins {
    /// From `ROWCAST_PUSH_ORIGINS`.
    pub fn new(config: &PushConfig) -> Self {
        Self {
            listed: config.origins.clone(),
        }
    }

    /// Whether `endpoint` may be posted to, and with which reach: a listed
    /// origin is trusted (it may be on a private network, over http); any
    /// other must be https on a public address, and only when none is
    /// listed.
    pub fn check(&self, endpoint: &str) -> Result<(reqwest::Url, Reach), String> {
        let url = endpoint_url(endpoint)?;
        let origin = url.origin().ascii_serialization();
        if self.listed.contains(&origin) {
            return Ok((url, Reach::Any));
        }
        if !self.listed.is_empty() {
            return Err(format!(
                "`endpoint` is on {origin}, which is not one of the relay's push origins \
                 (ROWCAST_PUSH_ORIGINS)"
            ));
        }
        if url.scheme() != "https" {
            return Err("`endpoint` must be https".into());
        }
        check_target(&url, Reach::Public).map_err(|e| format!("`endpoint`: {e}"))?;
        Ok((url, Reach::Public))
    }
}

/// `endpoint` as a URL a push service could have given: http or https, at
/// most 2048 characters, no control characters (which the URL parser would
/// quietly encode but the stored text must not hold) and no credentials.
fn endpoint_url(endpoint: &str) -> Result<reqwest::Url, String> {
    if endpoint.len() > 2048 {
        return Err("`endpoint` is longer than 2048 characters".into());
    }
    let not_a_url = || "`endpoint` is not a URL".to_string();
    if endpoint.chars().any(char::is_control) {
        return Err(not_a_url());
    }
    let url = reqwest::Url::parse(endpoint).map_err(|_| not_a_url())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("`endpoint` must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("`endpoint` must not carry credentials".into());
    }
    Ok(url)
}

/// Checks and stores `user`'s subscription; registering the same endpoint
/// again changes nothing, and an endpoint another user had registered
/// (the same browser, someone else signed in) moves to `user`.
pub async fn register(
    pool: &Pool,
    origins: &Origins,
    per_user: usize,
    user: &str,
    subscription: &SubscriptionJson,
) -> Result<(), Refused> {
    origins
        .check(&subscription.endpoint)
        .map_err(Refused::Invalid)?;
    SubscriptionKeys::parse(&subscription.keys.p256dh, &subscription.keys.auth)
        .map_err(|e| Refused::Invalid(e.to_string()))?;
    let mut client = pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    // One user's registrations in a row, so the cap holds under races.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('rowcast push'), hashtext($1))",
        &[&user],
    )
    .await
    .map_err(DbError::from)?;
    let row = tx
        .query_one(
            "SELECT count(*) FILTER (WHERE endpoint <> $2), bool_or(endpoint = $2)
             FROM realtime.push_subscriptions WHERE sub = $1",
            &[&user, &subscription.endpoint],
        )
        .await
        .map_err(DbError::from)?;
    let (others, already): (i64, Option<bool>) = (row.get(0), row.get(1));
    if already != Some(true) && usize::try_from(others).unwrap_or(usize::MAX) >= per_user {
        return Err(Refused::Capped(per_user));
    }
    tx.execute(
        "INSERT INTO realtime.push_subscriptions (endpoint, sub, p256dh, auth)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (endpoint) DO UPDATE
            SET sub = excluded.sub, p256dh = excluded.p256dh, auth = excluded.auth
          WHERE (push_subscriptions.sub, push_subscriptions.p256dh, push_subscriptions.auth)
                IS DISTINCT FROM (excluded.sub, excluded.p256dh, excluded.auth)",
        &[
            &subscription.endpoint,
            &user,
            &subscription.keys.p256dh,
            &subscription.keys.auth,
        ],
    )
    .await
    .map_err(DbError::from)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// Removes `user`'s subscription of `endpoint` (nothing when it is not
/// theirs or not there).
pub async fn unregister(pool: &Pool, user: &str, endpoint: &str) -> Result<(), Refused> {
    if endpoint_url(endpoint).is_err() {
        // Never stored, so not registered: nothing to remove.
        return Ok(());
    }
    let client = pool.get().await.map_err(DbError::from)?;
    client
        .execute(
            "DELETE FROM realtime.push_subscriptions WHERE endpoint = $1 AND sub = $2",
            &[&endpoint, &user],
        )
        .await
        .map_err(DbError::from)?;
    Ok(())
}

/// What the gateway's push endpoints need: the VAPID public key and the
/// registration rules.
pub struct Registry {
    /// base64url of the VAPID public key.
    pub public_key: String,
    /// Which push services subscriptions may use.
    pub origins: Origins,
    /// Subscriptions one user may register.
    pub per_user: usize,
}

impl Registry {
    /// Checks and stores `user`'s subscription (see [`register`]).
    pub async fn register(
        &self,
        pool: &Pool,
        user: &str,
        subscription: &SubscriptionJson,
    ) -> Result<(), Refused> {
        register(pool, &self.origins, self.per_user, user, subscription).await
    }
}
