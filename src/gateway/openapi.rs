//! The OpenAPI document of the HTTP API, served at `/v1/openapi.json`. It is
//! generated from the handlers' `#[utoipa::path]` attributes and the types
//! of their bodies, so it describes what the handlers do. The WebSocket
//! protocol (`/v1/ws`) is not HTTP request and response: docs/protocol.md
//! describes it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{http, push, sse};

/// The HTTP API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "rowcast HTTP API",
        description = "Room history, publishing, Server-Sent Events, Web Push registration, health, readiness and \
            metrics of a rowcast relay (client protocol version 1.1). Errors have the body \
            `{\"error\":{\"code\":..,\"message\":..}}` with the codes of the protocol's \
            `reply` frames. Tokens are JWTs: `sub` is the user, `role: \"service\"` marks a \
            trusted backend."
    ),
    paths(
        sse::stream,
        http::history,
        http::publish,
        push::vapid,
        push::subscribe,
        push::unsubscribe,
        http::healthz,
        http::readyz,
        http::metrics,
        document,
    ),
    modifiers(&Security),
    tags(
        (name = "sse", description = "Server-Sent Events: rooms' events as a stream."),
        (name = "history", description = "A room's stored events, page by page."),
        (name = "publish", description = "Events stored by a trusted backend."),
        (name = "push", description = "Web Push: the VAPID key and users' browser subscriptions."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    )
)]
pub(crate) struct ApiDoc;

/// Adds the two ways of sending a token.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`Authorization: Bearer <JWT>`. HS256 with `JWT_SECRET`, or RS256/ES256 \
                         with a configured public key; `exp` is required.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The same JWT in the query (`?token=`), for clients that cannot set headers.",
            ))),
        );
    }
}

/// The document as JSON, built once.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The HTTP API's OpenAPI 3.1 document.", body = Object,
            content_type = "application/json"),
    ),
)]
pub(super) async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router's routes that are not HTTP API operations: the WebSocket
    /// upgrades, which docs/protocol.md and docs/documents.md describe.
    /// (`/socket.io/`, the other socket protocol, comes from its own merged
    /// router, not `.route`.)
    const NOT_IN_THE_DOCUMENT: &[&str] = &["/v1/ws", "/v1/docs/{name}"];

    /// Every `(path, method)` that `gateway::router` declares with
    /// `.route(..)`, read from its source.
    fn routes() -> Vec<(String, String)> {
        let source = include_str!("mod.rs");
        let mut routes = Vec::new();
        for rest in source.split(".route(").skip(1) {
            let rest = rest
                .trim_start()
                .strip_prefix('"')
                .expect("a route's path is a literal");
            let (path, rest) = rest.split_once('"').expect("a route's path is a literal");
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let call = &rest[..end];
            for method in ["get", "post", "put", "patch", "delete"] {
                let named = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0
                        || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && call.as_bytes()[i - 1] != b'_'
                });
                if named {
                    routes.push((path.to_string(), method.to_string()));
                }
            }
        }
        routes
    }

    fn documented() -> Vec<(String, String)> {
        let value: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let paths = value["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|key| ["get", "post", "put", "patch", "delete"].contains(&key.as_str()))
                    .map(move |method| (path.clone(), method.clone()))
            })
            .collect()
    }

    #[test]
    fn the_document_lists_every_route_and_nothing_else() {
        let routes: Vec<_> = routes()
            .into_iter()
            .filter(|(path, _)| !NOT_IN_THE_DOCUMENT.contains(&path.as_str()))
            .collect();
        assert!(routes.len() >= 7, "routes read from mod.rs: {routes:?}");
        let documented = documented();
        for route in &routes {
            assert!(
                documented.contains(route),
                "{route:?} is not in the OpenAPI document"
            );
        }
        for operation in &documented {
            assert!(
                routes.contains(operation),
                "{operation:?} is documented but not routed"
            );
        }
    }

    #[test]
    fn operations_that_need_a_token_say_so() {
        let value: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        for (path, method) in [("/v1/rooms/{room}/events", "get"), ("/v1/publish", "post")] {
            let security = &value["paths"][path][method]["security"];
            assert_eq!(
                security,
                &serde_json::json!([{"bearer": []}, {"token": []}]),
                "{path}"
            );
        }
        let schemes = &value["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["token"]["in"], "query");
    }
}
