//! The OAuth server's side of the platform: which servers are trusted, and what a trusted
//! server says about a token (`app.info`).

use serde_json::{Value, json};
use thiserror::Error;
use url::Url;

use super::rest::{self, RestError};
use crate::secret::Secret;

/// What a trusted OAuth server vouches for about an access token.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub member_id: String,
    pub client_id: Option<String>,
    pub installed: Option<bool>,
}

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("the OAuth server is not on the trusted list")]
    UntrustedServer,
    #[error("the OAuth server refused the token ({0})")]
    Refused(String),
    #[error("the token belongs to another portal")]
    WrongPortal,
    #[error("the token belongs to another application")]
    WrongApplication,
    #[error("the OAuth server could not be asked: {0}")]
    Unavailable(String),
}

/// The trusted OAuth servers and the app's identity with them.
#[derive(Clone)]
pub struct OAuthServers {
    servers: Vec<Url>,
    client_id: String,
}

impl OAuthServers {
    pub fn new(servers: Vec<Url>, client_id: String) -> OAuthServers {
        OAuthServers { servers, client_id }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The configured server that `server_endpoint` (e.g. `https://oauth.bitrix.info/rest/`)
    /// belongs to. Only the configured address is ever called, never the presented one.
    pub fn trusted(&self, server_endpoint: &str) -> Option<&Url> {
        let presented = Url::parse(server_endpoint).ok()?;
        self.servers
            .iter()
            .find(|server| server.origin() == presented.origin())
    }

    /// Servers to ask when the caller named none: the named one if trusted, else all.
    pub fn candidates(&self, server_endpoint: Option<&str>) -> Result<Vec<&Url>, VerifyError> {
        match server_endpoint {
            Some(endpoint) => self
                .trusted(endpoint)
                .map(|s| vec![s])
                .ok_or(VerifyError::UntrustedServer),
            None => Ok(self.servers.iter().collect()),
        }
    }

    /// Asks the trusted servers (the named one, or each in turn) whether `token` is a live
    /// token of this app on portal `member_id`.
    pub async fn verify(
        &self,
        http: &reqwest::Client,
        server_endpoint: Option<&str>,
        token: &Secret,
        member_id: &str,
    ) -> Result<TokenInfo, VerifyError> {
        let mut last = VerifyError::Refused("no server answered".to_owned());
        for server in self.candidates(server_endpoint)? {
            match self.ask(http, server, token).await {
                Ok(info) if info.member_id != member_id => return Err(VerifyError::WrongPortal),
                Ok(info)
                    if info
                        .client_id
                        .as_deref()
                        .is_some_and(|id| id != self.client_id) =>
                {
                    return Err(VerifyError::WrongApplication);
                }
                Ok(info) => return Ok(info),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    async fn ask(
        &self,
        http: &reqwest::Client,
        server: &Url,
        token: &Secret,
    ) -> Result<TokenInfo, VerifyError> {
        let endpoint = format!("{server}rest/");
        let answer = rest::call(http, &endpoint, "app.info", json!({}), token)
            .await
            .map_err(|err| match err {
                RestError::Api { code, .. } => VerifyError::Refused(code),
                other => VerifyError::Unavailable(other.to_string()),
            })?;
        token_info(&answer["result"])
            .ok_or_else(|| VerifyError::Refused("answer names no portal".to_owned()))
    }
}

/// Reads `app.info` leniently: the member id under `install` or at the top.
fn token_info(result: &Value) -> Option<TokenInfo> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let install = &result["install"];
    let member_id = text(&install["member_id"]).or_else(|| text(&result["member_id"]))?;
    let installed = install["installed"]
        .as_bool()
        .or_else(|| result["INSTALLED"].as_bool());
    Some(TokenInfo {
        member_id,
        client_id: text(&result["client_id"]),
        installed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> OAuthServers {
        let list = ["https://oauth.bitrix.info/", "http://127.0.0.1:4000/"];
        OAuthServers::new(
            list.iter().map(|s| Url::parse(s).unwrap()).collect(),
            "app".into(),
        )
    }

    #[test]
    fn only_listed_origins_are_trusted() {
        let s = servers();
        assert!(s.trusted("https://oauth.bitrix.info/rest/").is_some());
        assert!(s.trusted("http://127.0.0.1:4000/rest/").is_some());
        assert!(s.trusted("http://oauth.bitrix.info/rest/").is_none());
        assert!(
            s.trusted("https://oauth.bitrix.info.evil.com/rest/")
                .is_none()
        );
        assert!(s.trusted("http://127.0.0.1:4001/rest/").is_none());
        assert!(matches!(
            s.candidates(Some("https://evil/")),
            Err(VerifyError::UntrustedServer)
        ));
        assert_eq!(s.candidates(None).unwrap().len(), 2);
    }

    #[test]
    fn app_info_is_read_from_either_shape() {
        let nested = json!({"client_id": "app", "install": {"member_id": "m1", "installed": true}});
        let info = token_info(&nested).unwrap();
        assert_eq!(
            (info.member_id.as_str(), info.installed),
            ("m1", Some(true))
        );

        let flat = json!({"member_id": "m2", "INSTALLED": false});
        assert_eq!(token_info(&flat).unwrap().member_id, "m2");
        assert!(token_info(&json!({"CODE": "x"})).is_none());
    }
}
