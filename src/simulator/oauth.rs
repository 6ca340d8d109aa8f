//! The simulated OAuth server (the stand-in for oauth.bitrix.info): the token endpoint with
//! single-use refresh, `app.info` for verifying frames, and the BX24.js stand-in.

use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use super::rest::{Answer, RestError, app_info, envelope, method_name, read_params};
use super::tokens::Holder;
use super::wire::Param;
use super::{Install, Simulator, page};

/// The scope every simulated token carries.
pub(crate) const SCOPE: &str = "crm,placement,user_brief";

pub(crate) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/oauth/token/", any(token))
        .route("/oauth/token", any(token))
        .route("/rest/{method}", any(rest))
        .route("/api/v1/", get(page::bx24_js))
        .route("/api/v1", get(page::bx24_js))
        .route("/api/v1/bx24.js", get(page::bx24_js))
        .with_state(sim)
}

/// An OAuth error answer.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
}

impl Refusal {
    fn grant(error: &'static str, description: &'static str) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            error,
            description,
        }
    }
}

async fn token(
    State(sim): State<Simulator>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let outcome = match read_params(query.as_deref(), &headers, &body) {
        Ok(params) => refresh(&sim, &params),
        Err(_) => Err(Refusal::grant(
            "invalid_request",
            "The request body is malformed",
        )),
    };

    match outcome {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(r) => {
            let body = json!({ "error": r.error, "error_description": r.description });
            (r.status, axum::Json(body)).into_response()
        }
    }
}

/// `grant_type=refresh_token`: checks the client, then the token, then uses it up.
fn refresh(sim: &Simulator, params: &Param) -> Result<Value, Refusal> {
    let config = sim.config();
    if params.text("grant_type") != Some("refresh_token") {
        return Err(Refusal::grant(
            "unsupported_grant_type",
            "Only refresh_token is supported here",
        ));
    }
    let client_ok = params.text("client_id") == Some(config.client_id.as_str())
        && params.text("client_secret") == Some(config.client_secret.as_str());
    if !client_ok {
        return Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "Invalid client authentication",
        });
    }

    let mut world = sim.world();
    let given = params.text("refresh_token").unwrap_or_default();
    let (holder, alive) = world
        .tokens
        .refresh_holder(given)
        .ok_or(Refusal::grant("invalid_grant", "Invalid refresh token"))?;
    let portal = &world.portals[holder.portal];
    if portal.install == Install::Removed {
        return Err(Refusal::grant("NOT_INSTALLED", "Application not installed"));
    }
    if !alive {
        return Err(Refusal::grant("invalid_grant", "Invalid refresh token"));
    }
    if portal.payment_required {
        return Err(Refusal::grant("PAYMENT_REQUIRED", "Payment required"));
    }

    world
        .tokens
        .redeem(given)
        .map_err(|_| Refusal::grant("invalid_grant", "Invalid refresh token"))?;
    let pair = world.tokens.issue_pair(holder, config.access_token_ttl);
    world.refresh_count += 1;

    let portal = &world.portals[holder.portal];
    Ok(json!({
        "access_token": pair.access.access_token,
        "refresh_token": pair.refresh_token,
        "expires": pair.access.expires,
        "expires_in": pair.access.expires_in,
        "scope": SCOPE,
        "domain": sim.oauth_domain(),
        "server_endpoint": sim.server_endpoint(),
        "client_endpoint": portal.client_endpoint(),
        "member_id": portal.member_id,
        "status": "L",
        "user_id": holder.user_id,
    }))
}

/// The OAuth server answers only `app.info`, with the `install` block apps verify frames by.
async fn rest(
    State(sim): State<Simulator>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = SystemTime::now();
    if method_name(&method) != "app.info" {
        let missing = RestError::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!");
        return envelope(Err(missing), started);
    }

    let outcome = read_params(query.as_deref(), &headers, &body).and_then(|params| {
        let token = params.filled("auth").ok_or(RestError::new(
            401,
            "NO_AUTH_FOUND",
            "Wrong authorization data",
        ))?;
        let world = sim.world();
        let Holder { portal, .. } = world
            .tokens
            .check(token)
            .map_err(|e| RestError::new(401, e.code(), e.description()))?;
        Ok(Answer::of(app_info(&world, portal, sim.config(), true)))
    });

    envelope(outcome, started)
}
