//! A portal's REST endpoint: parameters, auth, the leaky-bucket rate limit, fault injection,
//! method dispatch, and the answer envelope. Also the 302 a moved portal answers.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};

use super::wire::{Param, parse_query, time_block};
use super::{Install, PortalState, RateLimit, Simulator, SimulatorConfig, World, batch, page};

/// A successful method result, before the envelope.
#[derive(Debug)]
pub(crate) struct Answer {
    pub result: Value,
    pub total: Option<usize>,
    pub next: Option<usize>,
}

/// Lists come in pages of this size, as on the platform.
const PAGE: usize = 50;

impl Answer {
    pub fn of(result: Value) -> Answer {
        Answer {
            result,
            total: None,
            next: None,
        }
    }

    /// One page of a list, chosen by the `start` parameter; `wrap` shapes the page into the
    /// method's result (a bare list, or `{"items": [...]}` and the like).
    pub fn page(all: Vec<Value>, params: &Param, wrap: impl FnOnce(Vec<Value>) -> Value) -> Answer {
        let total = all.len();
        let start = params.u64("start").map_or(0, |s| s as usize).min(total);
        let page: Vec<Value> = all.into_iter().skip(start).take(PAGE).collect();
        let next = (start + PAGE < total).then_some(start + PAGE);
        Answer {
            result: wrap(page),
            total: Some(total),
            next,
        }
    }
}

/// An error answer: `{"error", "error_description"}` with an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RestError {
    pub status: u16,
    pub error: String,
    pub description: String,
    /// The offending parameter, which `ERROR_ARGUMENT` answers name.
    pub argument: Option<String>,
}

impl RestError {
    pub fn new(status: u16, error: &str, description: &str) -> RestError {
        RestError {
            status,
            error: error.to_string(),
            description: description.to_string(),
            argument: None,
        }
    }

    pub fn bad(error: &str, description: &str) -> RestError {
        RestError::new(400, error, description)
    }

    pub fn argument(name: &str) -> RestError {
        RestError {
            argument: Some(name.to_string()),
            ..RestError::bad(
                "ERROR_ARGUMENT",
                &format!("Argument '{name}' is null or empty"),
            )
        }
    }

    pub fn body(&self) -> Value {
        let mut body = json!({ "error": self.error, "error_description": self.description });
        if let Some(argument) = &self.argument {
            body["argument"] = json!(argument);
        }
        body
    }
}

/// An error answer to the next calls of a method, set by `SimPortal::fail_next`.
pub(crate) struct Fault {
    pub remaining: usize,
    pub status: u16,
    pub error: String,
}

/// The platform's per-portal limit: each request fills the bucket by one, it drains at
/// `per_second`, and a request that would overflow `burst` is refused.
pub(crate) struct LeakyBucket {
    limit: RateLimit,
    level: f64,
    at: Instant,
}

impl LeakyBucket {
    pub fn new(limit: RateLimit) -> LeakyBucket {
        LeakyBucket {
            limit,
            level: 0.0,
            at: Instant::now(),
        }
    }

    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let drained = now.saturating_duration_since(self.at).as_secs_f64() * self.limit.per_second;
        self.level = (self.level - drained).max(0.0);
        self.at = now;

        // Refused requests do not fill the bucket.
        if self.level + 1.0 > self.limit.burst {
            return false;
        }
        self.level += 1.0;
        true
    }
}

/// Axum state of one portal server: which portal, and which address this server listens on
/// (a moved portal keeps its old server running to answer with redirects).
#[derive(Clone)]
pub(crate) struct PortalCtx {
    pub sim: Simulator,
    pub portal: usize,
    pub addr: SocketAddr,
}

pub(crate) fn portal_router(sim: Simulator, portal: usize, addr: SocketAddr) -> Router {
    let ctx = PortalCtx { sim, portal, addr };
    Router::new()
        .route("/rest/{method}", any(rest))
        .merge(page::routes())
        .layer(middleware::from_fn_with_state(
            ctx.clone(),
            redirect_if_moved,
        ))
        .with_state(ctx)
}

/// After `move_domain` the old address answers everything with a 302 to the same path on the
/// new one. A client that follows it with a POST ends up sending a GET without the body.
async fn redirect_if_moved(State(ctx): State<PortalCtx>, req: Request, next: Next) -> Response {
    let moved_to = {
        let mut world = ctx.sim.world();
        let portal = &mut world.portals[ctx.portal];
        let moved = portal.addr != ctx.addr;
        if moved {
            portal.stats.redirected += 1;
        }
        moved.then_some(portal.addr)
    };

    let Some(addr) = moved_to else {
        return next.run(req).await;
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("http://{addr}{path}");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn rest(
    State(ctx): State<PortalCtx>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = SystemTime::now();
    let method = method_name(&method);

    let outcome = read_params(query.as_deref(), &headers, &body).and_then(|params| {
        let mut world = ctx.sim.world();
        handle(&mut world, ctx.portal, &method, &params, ctx.sim.config())
    });

    envelope(outcome, started)
}

/// Method names are case-insensitive and may end in `.json`.
pub(crate) fn method_name(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    lower.strip_suffix(".json").unwrap_or(&lower).to_string()
}

/// Query string, then the body (form or JSON) on top, like PHP's `$_REQUEST`.
pub(crate) fn read_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Param, RestError> {
    let mut params = parse_query(query.unwrap_or_default());
    if body.is_empty() {
        return Ok(params);
    }

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let from_body = if is_json {
        serde_json::from_slice::<Param>(body)
            .map_err(|_| RestError::bad("INVALID_REQUEST", "Request body is not valid JSON"))?
    } else {
        parse_query(&String::from_utf8_lossy(body))
    };

    params.merge(from_body);
    Ok(params)
}

/// One HTTP request to `/rest/`: counted, rate limited, authenticated, then run.
fn handle(
    world: &mut World,
    portal: usize,
    method: &str,
    params: &Param,
    config: &SimulatorConfig,
) -> Result<Answer, RestError> {
    let state = &mut world.portals[portal];
    state.stats.total += 1;
    *state
        .stats
        .rest_calls
        .entry(method.to_string())
        .or_default() += 1;
    if !state.bucket.take() {
        state.stats.rate_limited += 1;
        return Err(RestError::new(
            503,
            "QUERY_LIMIT_EXCEEDED",
            "Too many requests",
        ));
    }

    let token = params.filled("auth").ok_or(RestError::new(
        401,
        "NO_AUTH_FOUND",
        "Wrong authorization data",
    ))?;
    let holder = world
        .tokens
        .check(token)
        .map_err(|e| RestError::new(401, e.code(), e.description()))?;
    if holder.portal != portal {
        return Err(RestError::new(
            401,
            "invalid_token",
            "The access token provided is invalid.",
        ));
    }

    let state = &mut world.portals[portal];
    // app.info still answers, so an app can see why everything else fails.
    if state.payment_required && method != "app.info" {
        return Err(RestError::new(402, "PAYMENT_REQUIRED", "Payment required"));
    }
    if let Some(fault) = take_fault(state, method) {
        return Err(fault);
    }

    if method == "batch" {
        return batch::run(world, portal, params, config);
    }
    if method == "user.current" {
        return Ok(Answer::of(state.crm.current_user(holder.user_id)));
    }
    call_method(world, portal, method, params, config)
}

/// The next injected error for `method`, if any is left.
pub(crate) fn take_fault(portal: &mut PortalState, method: &str) -> Option<RestError> {
    let fault = portal.faults.get_mut(method)?;
    if fault.remaining == 0 {
        return None;
    }
    fault.remaining -= 1;
    Some(RestError::new(
        fault.status,
        &fault.error,
        "Failure injected by the simulator",
    ))
}

/// Runs one method (directly or inside batch) once auth is settled.
pub(crate) fn call_method(
    world: &mut World,
    portal: usize,
    method: &str,
    params: &Param,
    config: &SimulatorConfig,
) -> Result<Answer, RestError> {
    if method == "app.info" {
        return Ok(Answer::of(app_info(world, portal, config, false)));
    }

    let state = &mut world.portals[portal];
    if let Some(answer) = state.hooks.call(method, params) {
        return answer;
    }
    if let Some(answer) = state.crm.call(method, params) {
        return answer;
    }
    Err(RestError::new(
        404,
        "ERROR_METHOD_NOT_FOUND",
        "Method not found!",
    ))
}

/// `app.info` as the portal answers it, or with `install` as the OAuth server does.
pub(crate) fn app_info(
    world: &World,
    portal: usize,
    config: &SimulatorConfig,
    with_install: bool,
) -> Value {
    let state = &world.portals[portal];
    let installed = state.install == Install::Installed;

    let mut info = Map::new();
    info.insert("ID".into(), json!("7"));
    info.insert("CODE".into(), json!(config.client_id));
    info.insert("VERSION".into(), json!(1));
    info.insert("STATUS".into(), json!("L"));
    info.insert("INSTALLED".into(), json!(installed));
    info.insert(
        "PAYMENT_EXPIRED".into(),
        json!(if state.payment_required { "Y" } else { "N" }),
    );
    info.insert("DAYS".into(), Value::Null);
    info.insert("LICENSE".into(), json!("en_project"));
    info.insert("client_id".into(), json!(config.client_id));
    if with_install {
        let install =
            json!({ "installed": installed, "member_id": state.member_id, "status": "L" });
        info.insert("install".into(), install);
    }
    Value::Object(info)
}

/// Wraps an outcome in the platform's envelope.
pub(crate) fn envelope(outcome: Result<Answer, RestError>, started: SystemTime) -> Response {
    let (status, body) = match outcome {
        Ok(answer) => {
            let mut body = json!({ "result": answer.result });
            if let Some(total) = answer.total {
                body["total"] = json!(total);
            }
            if let Some(next) = answer.next {
                body["next"] = json!(next);
            }
            body["time"] = time_block(started);
            (StatusCode::OK, body)
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, e.body())
        }
    };
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_takes_a_burst_then_drains_at_its_rate() {
        let limit = RateLimit {
            per_second: 2.0,
            burst: 50.0,
        };
        let mut bucket = LeakyBucket::new(limit);
        let t0 = bucket.at;

        let taken = (0..60).filter(|_| bucket.take_at(t0)).count();
        assert_eq!(taken, 50);

        // Half a second drains one request's worth, and only one.
        let later = t0 + Duration::from_millis(500);
        assert!(bucket.take_at(later));
        assert!(!bucket.take_at(later));

        // An idle bucket empties completely, never below zero.
        let idle = later + Duration::from_secs(3600);
        assert_eq!((0..60).filter(|_| bucket.take_at(idle)).count(), 50);
    }

    #[test]
    fn pages_hold_fifty_and_point_to_the_next() {
        let all: Vec<Value> = (0..120).map(|i| json!(i)).collect();

        let first = Answer::page(all.clone(), &Param::empty(), Value::Array);
        let last = Answer::page(all, &parse_query("start=100"), Value::Array);

        assert_eq!(first.total, Some(120));
        assert_eq!(first.next, Some(50));
        assert_eq!(first.result.as_array().map(Vec::len), Some(50));
        assert_eq!(last.next, None);
        assert_eq!(last.result.as_array().map(Vec::len), Some(20));
    }

    #[test]
    fn method_names_ignore_case_and_a_json_suffix() {
        assert_eq!(method_name("CRM.Item.Get.json"), "crm.item.get");
        assert_eq!(method_name("batch"), "batch");
    }
}
