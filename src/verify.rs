//! Verifying what a portal posts into a frame (the installer, the app, its placements).
//!
//! The frame's URL is public, so its POST proves nothing by itself: the posted `AUTH_ID` is
//! checked with a trusted OAuth server, which must vouch that it is a live token of this app on
//! the portal the frame claims to come from.

use crate::app::{AppState, record_portal};
use crate::error::{AppError, AppResult};
use crate::platform::oauth::{TokenInfo, VerifyError};
use crate::platform::wire::Frame;
use crate::secret::Secret;

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
    let server = frame.server_endpoint.as_deref().or(stored_server);
    let token = Secret::new(frame.auth_id.clone());
    state
        .oauth
        .verify(&state.http, server, &token, &frame.member_id)
        .await
        .map_err(verify_failure)
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
