//! The app's own session inside the frame: a short-lived token, signed by the app, naming the
//! portal and the user a verified frame came from. It travels in links, forms and the
//! `X-Session` header, never in a cookie (cookies in a third-party frame are often blocked).

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::app::{AppState, record_portal};
use crate::error::AppError;
use crate::store::{Portal, PortalId, PortalStatus, now};

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub portal_id: PortalId,
    pub member_id: String,
    pub user_id: i64,
    pub lang: String,
    pub expires_at: i64,
}

impl Session {
    /// The signed token for this session.
    pub fn token(&self, state: &AppState) -> String {
        let payload = format!(
            "v1|{}|{}|{}|{}|{}",
            self.portal_id.0, self.member_id, self.user_id, self.lang, self.expires_at
        );
        state.signer.sign(payload.as_bytes())
    }

    /// A session for a user of `portal`, valid for the configured time.
    pub fn issue(state: &AppState, portal: &Portal, user_id: i64, lang: &str) -> Session {
        Session {
            portal_id: portal.id,
            member_id: portal.member_id.clone(),
            user_id,
            lang: if lang.eq_ignore_ascii_case("ru") {
                "ru"
            } else {
                "en"
            }
            .to_owned(),
            expires_at: now() + state.settings.session_ttl.as_secs() as i64,
        }
    }

    /// Reads and checks a token: signature, format and expiry.
    pub fn verify(state: &AppState, token: &str) -> Result<Session, AppError> {
        let payload = state
            .signer
            .verify(token)
            .ok_or_else(|| AppError::Unauthorized("session token is not valid".into()))?;
        let text = String::from_utf8(payload).map_err(|_| malformed())?;
        let parts: Vec<&str> = text.split('|').collect();
        let ["v1", portal, member, user, lang, expires] = parts.as_slice() else {
            return Err(malformed());
        };
        let session = Session {
            portal_id: PortalId(portal.parse().map_err(|_| malformed())?),
            member_id: (*member).to_owned(),
            user_id: user.parse().map_err(|_| malformed())?,
            lang: (*lang).to_owned(),
            expires_at: expires.parse().map_err(|_| malformed())?,
        };
        if session.expires_at < now() {
            return Err(AppError::Unauthorized(
                "session expired: reopen the app".into(),
            ));
        }
        Ok(session)
    }
}

fn malformed() -> AppError {
    AppError::Unauthorized("session token is not valid".into())
}

/// A request inside a verified session: the token from `?s=` or the `X-Session` header, and
/// the portal it names, still installed. Another portal's rows can never be reached from it.
pub struct InSession {
    pub session: Session,
    pub portal: Portal,
    pub token: String,
}

impl<S> FromRequestParts<S> for InSession
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let from_header = parts
            .headers
            .get("x-session")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let from_query = parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "s")
                .map(|(_, v)| v.into_owned())
        });
        let token = from_header.or(from_query).ok_or_else(|| {
            AppError::Unauthorized("no session: open the app from the portal".into())
        })?;

        let session = Session::verify(&state, &token)?;
        record_portal(&session.member_id);
        let portal = state
            .store
            .portal(session.portal_id)
            .await?
            .filter(|p| p.member_id == session.member_id && p.status != PortalStatus::Removed)
            .ok_or_else(|| AppError::Forbidden("the app is not installed on this portal".into()))?;
        Ok(InSession {
            session,
            portal,
            token,
        })
    }
}
