//! Verifying what a portal posts into a frame (the installer, the app, its placements).
//!
//! The frame's URL is public, so its POST proves nothing by itself: the posted `AUTH_ID` is
//! checked with a trusted OAuth server, which must vouch that it is a live token of this app on
//! the portal the frame claims to come from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::app::{AppState, record_portal};
use crate::error::{AppError, AppResult};
use crate::platform::oauth::{TokenInfo, VerifyError};
use crate::platform::wire::Frame;
use crate::secret::Secret;
use crate::store::now;

/// Tokens a trusted server vouched for, kept for their lifetime so that paging through the
/// app does not ask the OAuth server again. Keyed by a digest: the cache holds no token.
#[derive(Clone, Default)]
pub struct VerifiedTokens(Arc<Mutex<HashMap<TokenDigest, (String, i64)>>>);

type TokenDigest = [u8; 32];

impl VerifiedTokens {
    fn get(&self, token: &str, member_id: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cache = self.0.lock().expect("verified tokens lock");
        cache
            .get(&key)
            .is_some_and(|(member, until)| member == member_id && *until > now())
    }

    fn put(&self, token: &str, member_id: &str, lifetime: i64) {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut cache = self.0.lock().expect("verified tokens lock");
        if cache.len() > 10_000 {
            let now = now();
            cache.retain(|_, (_, until)| *until > now);
        }
        cache.insert(key, (member_id.to_owned(), now() + lifetime.clamp(0, 3600)));
    }
}

/// Reads a frame's query string and form body.
pub fn parse_frame(query: Option<&str>, body: &[u8]) -> AppResult<Frame> {
    let frame = Frame::parse(query.unwrap_or_default(), body)
        .map_err(|err| AppError::BadRequest(format!("malformed frame: {err}")))?;
    record_portal(&frame.member_id);
    Ok(frame)
}

/// Asks a trusted OAuth server about the frame's token. The server named in the frame is
/// used if it is trusted; else `stored_server`, the one remembered for the portal; else each
/// trusted server in turn.
pub async fn verify_frame(
    state: &AppState,
    frame: &Frame,
    stored_server: Option<&str>,
) -> AppResult<TokenInfo> {
    if state.verified.get(&frame.auth_id, &frame.member_id) {
        return Ok(TokenInfo {
            member_id: frame.member_id.clone(),
            client_id: None,
            installed: None,
        });
    }
    let server = frame.server_endpoint.as_deref().or(stored_server);
    let token = Secret::new(frame.auth_id.clone());
    let info = state
        .oauth
        .verify(&state.http, server, &token, &frame.member_id)
        .await
        .map_err(verify_failure)?;
    state.verified.put(
        &frame.auth_id,
        &frame.member_id,
        frame.auth_expires.unwrap_or(3600),
    );
    Ok(info)
}

/// How a failed verification is answered.
pub fn verify_failure(err: VerifyError) -> AppError {
    match err {
        VerifyError::Unavailable(detail) => {
            tracing::warn!("token verification failed: {detail}");
            AppError::BadGateway("the OAuth server could not be reached; try again".to_owned())
        }
        VerifyError::Refused(_) => AppError::Unauthorized(err.to_string()),
        _ => AppError::Forbidden(err.to_string()),
    }
}
