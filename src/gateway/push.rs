//! Web Push registration: `GET /v1/push/vapid`, and `POST` and `DELETE
//! /v1/push/subscriptions` for the user a token names. The push sink
//! (`sink`) delivers to what is registered here.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Verifier;
use super::error::{ApiError, ErrorBody};
use super::GatewayState;
use crate::protocol::Code;
use crate::sink::subscriptions::{Refused, Registry, SubscriptionJson};

/// What the push endpoints use.
#[derive(Clone)]
pub(super) struct PushApi {
    verifier: Arc<Verifier>,
    pool: Pool,
    registry: Option<Arc<Registry>>,
}

impl FromRef<Arc<GatewayState>> for PushApi {
    fn from_ref(state: &Arc<GatewayState>) -> Self {
        Self {
            verifier: state.live.verifier.clone(),
            pool: state.live.reads.pool().clone(),
            registry: state.push.clone(),
        }
    }
}

impl PushApi {
    /// The registry, or 404 when Web Push is off.
    fn registry(&self) -> Result<&Registry, ApiError> {
        self.registry.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                "Web Push is not configured on this relay (ROWCAST_VAPID_PRIVATE_KEY)",
            )
        })
    }

    /// The user a request's token names; service tokens have no browser.
    fn user(&self, headers: &HeaderMap, query: Option<&str>) -> Result<String, ApiError> {
        let claims = super::http::claims(&self.verifier, headers, query)?;
        if claims.service {
            return Err(ApiError::forbidden(
                "push subscriptions belong to users: use the user's token",
            ));
        }
        Ok(claims.sub)
    }
}

/// What `GET /v1/push/vapid` answers.
#[derive(Serialize, ToSchema)]
pub(super) struct VapidKey {
    /// base64url of the uncompressed P-256 point: `applicationServerKey`
    /// for `pushManager.subscribe`.
    #[serde(rename = "publicKey")]
    public_key: String,
}

/// The relay's VAPID public key.
#[utoipa::path(
    get,
    path = "/v1/push/vapid",
    tag = "push",
    responses(
        (status = 200, description = "The key.", body = VapidKey),
        (status = 404, description = "Web Push is not configured.", body = ErrorBody),
    ),
)]
pub(super) async fn vapid(State(api): State<PushApi>) -> Result<Json<VapidKey>, ApiError> {
    Ok(Json(VapidKey {
        public_key: api.registry()?.public_key.clone(),
    }))
}

/// What `POST /v1/push/subscriptions` answers.
#[derive(Serialize, ToSchema)]
pub(super) struct Registered {
    /// The endpoint registered.
    endpoint: String,
}

/// Registers the token's user's browser subscription. Registering the same
/// endpoint again changes nothing.
#[utoipa::path(
    post,
    path = "/v1/push/subscriptions",
    tag = "push",
    request_body = SubscriptionJson,
    responses(
        (status = 201, description = "Registered.", body = Registered),
        (status = 400, description = "Not a `PushSubscription`, bad keys, or an endpoint \
            outside the relay's push origins.", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token.", body = ErrorBody),
        (status = 403, description = "A service token.", body = ErrorBody),
        (status = 404, description = "Web Push is not configured.", body = ErrorBody),
        (status = 429, description = "The user has as many subscriptions as allowed.",
            body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub(super) async fn subscribe(
    State(api): State<PushApi>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let registry = api.registry()?;
    let user = api.user(&headers, query.as_deref())?;
    let body = body.map_err(|_| ApiError::bad_request("the body could not be read"))?;
    let subscription: SubscriptionJson = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(
            "expected a PushSubscription: {\"endpoint\":..,\"keys\":{\"p256dh\":..,\"auth\":..}}",
        )
    })?;
    match registry.register(&api.pool, &user, &subscription).await {
        Ok(()) => Ok((
            StatusCode::CREATED,
            Json(Registered {
                endpoint: subscription.endpoint,
            }),
        )
            .into_response()),
        Err(Refused::Invalid(why)) => Err(ApiError::bad_request(why)),
        Err(capped @ Refused::Capped(_)) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            capped.to_string(),
        )),
        Err(Refused::Database(e)) => Err(ApiError::internal(e)),
    }
}

/// `DELETE /v1/push/subscriptions` body.
#[derive(Deserialize, ToSchema)]
pub(super) struct Unsubscribe {
    /// The endpoint to remove.
    endpoint: String,
}

/// Removes one of the token's user's subscriptions (204 also when it was
/// not there).
#[utoipa::path(
    delete,
    path = "/v1/push/subscriptions",
    tag = "push",
    request_body = Unsubscribe,
    responses(
        (status = 204, description = "Not registered (any more)."),
        (status = 400, description = "Not `{\"endpoint\":..}`.", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token.", body = ErrorBody),
        (status = 403, description = "A service token.", body = ErrorBody),
        (status = 404, description = "Web Push is not configured.", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = [])),
)]
pub(super) async fn unsubscribe(
    State(api): State<PushApi>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    api.registry()?;
    let user = api.user(&headers, query.as_deref())?;
    let body = body.map_err(|_| ApiError::bad_request("the body could not be read"))?;
    let request: Unsubscribe = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("expected {\"endpoint\":..}"))?;
    match crate::sink::subscriptions::unregister(&api.pool, &user, &request.endpoint).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(Refused::Invalid(why)) => Err(ApiError::bad_request(why)),
        Err(refused) => Err(ApiError::internal(refused)),
    }
}
