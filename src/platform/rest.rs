//! Calling a portal's REST API: the request, the answer envelope and its errors.
//!
//! Tokens travel in the JSON body, never in a URL, so no URL this module builds can leak one;
//! transport errors are stripped of their URL for the same reason.

use std::time::Duration;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::secret::Secret;

#[derive(Debug, Error)]
pub enum RestError {
    /// The platform answered with an error code.
    #[error("{method}: {code} (HTTP {status})")]
    Api {
        method: String,
        status: u16,
        code: String,
        description: String,
    },
    /// The portal moved: a redirect to its new address.
    #[error("{method}: portal answered with a redirect")]
    Moved { method: String, location: String },
    #[error("{method}: {reason}")]
    Transport { method: String, reason: String },
    #[error("{method}: answer is not a REST envelope (HTTP {status})")]
    BadAnswer { method: String, status: u16 },
}

impl RestError {
    /// The platform's error code, if the platform answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            RestError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            RestError::Api { status, .. } | RestError::BadAnswer { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Builds the HTTP client used for every call to the platform: no redirects are followed
/// (a moved portal must be handled, not followed as a GET) and every call has a deadline.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("b24-activity/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client settings are valid")
}

/// Calls `method` at `endpoint` (a portal's `client_endpoint`, ending in `/rest/`).
pub async fn call(
    http: &reqwest::Client,
    endpoint: &str,
    method: &str,
    params: Value,
    token: &Secret,
) -> Result<Value, RestError> {
    let mut body = match params {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    body.insert("auth".to_owned(), Value::String(token.expose().to_owned()));

    let url = format!("{endpoint}{method}");
    let response =
        http.post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|err| RestError::Transport {
                method: method.to_owned(),
                reason: transport_reason(err),
            })?;
    read_answer(method, response).await
}

/// Turns an HTTP answer from the platform into its `result` envelope or an error.
pub async fn read_answer(method: &str, response: reqwest::Response) -> Result<Value, RestError> {
    let status = response.status().as_u16();
    if response.status().is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        return Err(RestError::Moved {
            method: method.to_owned(),
            location,
        });
    }

    let bytes = response.bytes().await.map_err(|err| RestError::Transport {
        method: method.to_owned(),
        reason: transport_reason(err),
    })?;
    let answer: Value = serde_json::from_slice(&bytes).map_err(|_| RestError::BadAnswer {
        method: method.to_owned(),
        status,
    })?;

    if let Some(code) = answer.get("error").filter(|e| !e.is_null()) {
        let code = match code {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let description = answer
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return Err(RestError::Api {
            method: method.to_owned(),
            status,
            code,
            description,
        });
    }
    if !(200..300).contains(&status) || answer.get("result").is_none() {
        return Err(RestError::BadAnswer {
            method: method.to_owned(),
            status,
        });
    }
    Ok(answer)
}

/// A transport error in words, without the URL it carried.
pub fn transport_reason(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("{kind}: {}", err.without_url())
}
