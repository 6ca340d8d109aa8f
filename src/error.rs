//! The error every handler returns: a clear status and a short reason for the client, the
//! cause chain for the log, and nothing internal in a 5xx body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Gone(String),
    /// The platform could not be reached or refused what the app needed from it.
    BadGateway(String),
    Internal(anyhow::Error),
}

pub type AppResult<T, E = AppError> = Result<T, E>;

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Gone(_) => StatusCode::GONE,
            AppError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client may read.
    pub fn reason(&self) -> &str {
        match self {
            AppError::BadRequest(r)
            | AppError::Unauthorized(r)
            | AppError::Forbidden(r)
            | AppError::NotFound(r)
            | AppError::Gone(r)
            | AppError::BadGateway(r) => r,
            AppError::Internal(_) => "internal error",
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> AppError {
        AppError::Internal(err)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Internal(err) => tracing::error!("request failed: {err:#}"),
            other => tracing::info!(
                status = other.status().as_u16(),
                "refused: {}",
                other.reason()
            ),
        }
        (self.status(), self.reason().to_owned()).into_response()
    }
}
