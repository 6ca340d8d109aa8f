//! The OAuth server's side of the platform: which servers are trusted, what a trusted server
//! says about a token (`app.info`), and refreshing a token chain at its token endpoint.
//!
//! Refreshing goes through the `oauth2` crate with a response type of our own: the platform's
//! answer has no `token_type`, a comma-separated `scope` and fields of its own (`member_id`,
//! `client_endpoint`, ...). The client secret travels only in the POST body to a trusted server.

use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AccessToken, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken,
    RequestTokenError, Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
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

/// A new pair from the token endpoint, with what the platform said about the portal.
#[derive(Debug)]
pub struct TokenGrant {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub expires_in: i64,
    pub member_id: Option<String>,
    pub client_endpoint: Option<String>,
}

#[derive(Debug, Error)]
pub enum RefreshError {
    /// The platform refused the chain (`invalid_grant`, `NOT_INSTALLED`, `PAYMENT_REQUIRED`, ...).
    #[error("the OAuth server refused the refresh ({0})")]
    Refused(String),
    #[error("the OAuth server could not be asked: {0}")]
    Unavailable(String),
}

/// The trusted OAuth servers and the app's identity with them.
#[derive(Clone)]
pub struct OAuthServers {
    servers: Vec<Url>,
    client_id: String,
    client_secret: Secret,
}

impl OAuthServers {
    pub fn new(servers: Vec<Url>, client_id: String, client_secret: Secret) -> OAuthServers {
        OAuthServers {
            servers,
            client_id,
            client_secret,
        }
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

impl OAuthServers {
    /// Trades `refresh_token` for a new pair at `server`'s token endpoint. The old refresh
    /// token is spent whatever happens next: the caller must store the new pair before use.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        server: &Url,
        refresh_token: &Secret,
    ) -> Result<TokenGrant, RefreshError> {
        let token_url = TokenUrl::new(format!("{server}oauth/token/"))
            .map_err(|_| RefreshError::Unavailable("token endpoint address is malformed".into()))?;
        let client: PlatformClient = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose().to_owned()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);

        let refresh = RefreshToken::new(refresh_token.expose().to_owned());
        let answer = client
            .exchange_refresh_token(&refresh)
            .request_async(http)
            .await
            .map_err(|err| match err {
                RequestTokenError::ServerResponse(answer) => {
                    RefreshError::Refused(answer.error().as_ref().to_owned())
                }
                RequestTokenError::Request(err) => RefreshError::Unavailable(err.to_string()),
                // The body of an unreadable answer may hold tokens: it is never carried further.
                RequestTokenError::Parse(..) => {
                    RefreshError::Unavailable("unreadable token answer".into())
                }
                RequestTokenError::Other(_) => {
                    RefreshError::Unavailable("unexpected token answer".into())
                }
            })?;

        let refresh_token = answer
            .refresh_token
            .as_ref()
            .map(|t| Secret::new(t.secret().clone()))
            .ok_or_else(|| {
                RefreshError::Unavailable("token answer without a refresh token".into())
            })?;
        Ok(TokenGrant {
            access_token: Secret::new(answer.access_token.secret().clone()),
            refresh_token,
            expires_in: answer.expires_in.map(|s| s as i64).unwrap_or(3600),
            member_id: answer.member_id.clone(),
            client_endpoint: answer.client_endpoint.clone(),
        })
    }
}

type PlatformClient = oauth2::Client<
    BasicErrorResponse,
    PlatformTokenAnswer,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The platform's token answer. Only the fields the app uses are typed; `user_id` (a number
/// or a string), `scope`, `status` and `domain` are accepted and ignored.
#[derive(Debug, Deserialize, Serialize)]
struct PlatformTokenAnswer {
    access_token: AccessToken,
    refresh_token: Option<RefreshToken>,
    #[serde(default, deserialize_with = "lenient_number")]
    expires_in: Option<u64>,
    #[serde(default)]
    member_id: Option<String>,
    #[serde(default)]
    client_endpoint: Option<String>,
}

static BEARER: BasicTokenType = BasicTokenType::Bearer;

impl TokenResponse for PlatformTokenAnswer {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    fn token_type(&self) -> &BasicTokenType {
        &BEARER
    }

    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }

    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    fn scopes(&self) -> Option<&Vec<Scope>> {
        None
    }
}

fn lenient_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
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
        let list = list.iter().map(|s| Url::parse(s).unwrap()).collect();
        OAuthServers::new(list, "app".into(), Secret::new("secret"))
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
    fn token_answers_parse_without_token_type() {
        let documented = r#"{"access_token":"a","client_endpoint":"https://portal.bitrix24.com/rest/",
            "domain":"oauth.bitrix.info","expires":1780319382,"expires_in":3600,"member_id":"m",
            "refresh_token":"r","scope":"crm,entity","server_endpoint":"https://oauth.bitrix.info/rest/",
            "status":"F","user_id":67}"#;
        let answer: PlatformTokenAnswer = serde_json::from_str(documented).unwrap();
        assert_eq!(answer.expires_in, Some(3600));
        assert_eq!(answer.member_id.as_deref(), Some("m"));

        let sparse = r#"{"access_token":"a","refresh_token":"r","expires_in":"3600","user_id":"5","scope":"app"}"#;
        let answer: PlatformTokenAnswer = serde_json::from_str(sparse).unwrap();
        assert_eq!(answer.expires_in(), Some(Duration::from_secs(3600)));
        assert!(
            format!("{answer:?}").find("\"a\"").is_none(),
            "tokens stay out of Debug"
        );
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
