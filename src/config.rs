//! Settings read once at startup from the environment (and an optional `.env`).
//!
//! Every setting has a default or names itself when it is missing or malformed, so a
//! misconfigured deployment stops with one line instead of failing later.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::secret::Secret;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/b24-activity.db";
pub const DEFAULT_OAUTH_SERVERS: &str = "https://oauth.bitrix.info/,https://oauth.bitrix24.tech/";
pub const DEFAULT_BX24_SCRIPT_URL: &str = "//api.bitrix24.com/api/v1/";

/// Everything the application needs to run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: String,
    pub listen_addr: SocketAddr,
    /// Public base address of this app; event handlers are bound to `{public_url}events`.
    pub public_url: Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// OAuth servers whose word about a token is trusted, each ending in `/`.
    pub oauth_servers: Vec<Url>,
    /// Accept portals and OAuth servers on plain http (the simulator, local development).
    pub allow_http: bool,
    /// Where pages load BX24.js from.
    pub bx24_script_url: String,
    /// Key for tokens at rest; `None` means "use or create `token_key_file`".
    pub token_key: Option<Secret>,
    pub token_key_file: PathBuf,
    /// How long a session token issued to a verified frame stays valid.
    pub session_ttl: Duration,
    /// A portal with no REST traffic for this long gets one refresh of its chain.
    pub idle_refresh_after: Duration,
    /// The per-portal REST budget: requests per second and burst.
    pub rest_rate_per_second: f64,
    pub rest_rate_burst: f64,
    /// First wait before an enrichment retry; it doubles with each failure.
    pub retry_base: Duration,
    /// How long the log of a portal uninstalled without "delete data" is kept for a reinstall.
    pub removed_retention: Duration,
    /// How long a worker keeps the events it took; if its instance dies, another takes them
    /// after this.
    pub enrich_lease: Duration,
}

/// A setting that is missing or malformed, named so the operator can fix it.
#[derive(Debug)]
pub struct SettingError {
    pub name: &'static str,
    pub problem: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "setting {}: {}", self.name, self.problem)
    }
}

impl std::error::Error for SettingError {}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Settings, SettingError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, so tests can supply their own environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !database_url.starts_with("sqlite:") && !database_url.starts_with("postgres") {
            return Err(problem(
                "DATABASE_URL",
                "must start with sqlite: or postgres://",
            ));
        }

        let listen_addr = get("LISTEN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:3000".to_owned())
            .parse()
            .map_err(|_| problem("LISTEN_ADDR", "must be an address like 127.0.0.1:3000"))?;

        let allow_http = parse_bool("B24_ALLOW_HTTP", get("B24_ALLOW_HTTP"))?;

        let public_url = get("PUBLIC_URL").ok_or_else(|| {
            problem(
                "PUBLIC_URL",
                "required: the public https address of this app",
            )
        })?;
        let public_url = parse_base_url("PUBLIC_URL", &public_url, allow_http)?;

        let client_id = get("B24_CLIENT_ID").ok_or_else(|| {
            problem(
                "B24_CLIENT_ID",
                "required: the client id from the app registration",
            )
        })?;
        let client_secret = get("B24_CLIENT_SECRET").map(Secret::new).ok_or_else(|| {
            problem(
                "B24_CLIENT_SECRET",
                "required: the client secret from the app registration",
            )
        })?;

        let servers = get("B24_OAUTH_SERVERS").unwrap_or_else(|| DEFAULT_OAUTH_SERVERS.to_owned());
        let oauth_servers = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse_base_url("B24_OAUTH_SERVERS", s, allow_http))
            .collect::<Result<Vec<_>, _>>()?;
        if oauth_servers.is_empty() {
            return Err(problem(
                "B24_OAUTH_SERVERS",
                "must list at least one server",
            ));
        }

        let bx24_script_url =
            get("BX24_SCRIPT_URL").unwrap_or_else(|| DEFAULT_BX24_SCRIPT_URL.to_owned());
        if bx24_script_url.contains(['"', '<', '>', ' ']) {
            return Err(problem("BX24_SCRIPT_URL", "must be a plain URL"));
        }

        let token_key = get("TOKEN_KEY").map(Secret::new);
        let token_key_file = get("TOKEN_KEY_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("data/token.key"));

        let session_minutes = match get("SESSION_TTL_MINUTES") {
            None => 60,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|m| *m > 0)
                .ok_or_else(|| problem("SESSION_TTL_MINUTES", "must be a positive number"))?,
        };

        let idle_days = match get("IDLE_REFRESH_DAYS") {
            None => 20,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|d| (1..=150).contains(d))
                .ok_or_else(|| {
                    problem(
                        "IDLE_REFRESH_DAYS",
                        "must be a number of days from 1 to 150",
                    )
                })?,
        };

        let rest_rate_per_second =
            positive_number("REST_RATE_PER_SECOND", get("REST_RATE_PER_SECOND"), 2.0)?;
        let rest_rate_burst = positive_number("REST_RATE_BURST", get("REST_RATE_BURST"), 50.0)?;
        let retry_base_ms = positive_number("RETRY_BASE_MS", get("RETRY_BASE_MS"), 1000.0)?;
        let retention_days = positive_number(
            "REMOVED_RETENTION_DAYS",
            get("REMOVED_RETENTION_DAYS"),
            90.0,
        )?;
        let enrich_lease_secs = match get("ENRICH_LEASE_SECONDS") {
            None => 120,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=3600).contains(s))
                .ok_or_else(|| {
                    problem(
                        "ENRICH_LEASE_SECONDS",
                        "must be a number of seconds from 1 to 3600",
                    )
                })?,
        };

        Ok(Settings {
            database_url,
            listen_addr,
            public_url,
            client_id,
            client_secret,
            oauth_servers,
            allow_http,
            bx24_script_url,
            token_key,
            token_key_file,
            session_ttl: Duration::from_secs(session_minutes * 60),
            idle_refresh_after: Duration::from_secs(idle_days * 86_400),
            rest_rate_per_second,
            rest_rate_burst,
            retry_base: Duration::from_millis(retry_base_ms as u64),
            removed_retention: Duration::from_secs_f64(retention_days * 86_400.0),
            enrich_lease: Duration::from_secs(enrich_lease_secs),
        })
    }

    /// The URL that event handlers are bound to.
    pub fn events_url(&self) -> String {
        format!("{}events", self.public_url)
    }
}

/// Reads only the database address, for commands that need nothing else.
pub fn database_url_from_env() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

fn problem(name: &'static str, problem: &str) -> SettingError {
    SettingError {
        name,
        problem: problem.to_owned(),
    }
}

fn positive_number(
    name: &'static str,
    value: Option<String>,
    default: f64,
) -> Result<f64, SettingError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0)
            .ok_or_else(|| problem(name, "must be a positive number")),
    }
}

fn parse_bool(name: &'static str, value: Option<String>) -> Result<bool, SettingError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(_) => Err(problem(name, "must be true or false")),
    }
}

/// Parses an absolute http(s) base address and makes it end in `/`.
fn parse_base_url(name: &'static str, raw: &str, allow_http: bool) -> Result<Url, SettingError> {
    let mut url = Url::parse(raw).map_err(|_| problem(name, "must be an absolute URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(problem(name, "must use https (or set B24_ALLOW_HTTP=true)")),
        _ => return Err(problem(name, "must be an http(s) URL")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem(name, "must not carry a query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    const REQUIRED: [(&str, &str); 3] = [
        ("PUBLIC_URL", "https://app.example.com"),
        ("B24_CLIENT_ID", "local.abc"),
        ("B24_CLIENT_SECRET", "s3cr3t"),
    ];

    #[test]
    fn defaults_fill_everything_but_the_registration() {
        let s = settings(&REQUIRED).unwrap();

        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(s.public_url.as_str(), "https://app.example.com/");
        assert_eq!(s.events_url(), "https://app.example.com/events");
        assert_eq!(s.oauth_servers.len(), 2);
        assert!(!s.allow_http);
    }

    #[test]
    fn a_missing_setting_names_itself() {
        let err = settings(&REQUIRED[..2]).unwrap_err();
        assert_eq!(err.name, "B24_CLIENT_SECRET");
        assert!(err.to_string().starts_with("setting B24_CLIENT_SECRET:"));
    }

    #[test]
    fn plain_http_needs_the_explicit_switch() {
        let mut vars = REQUIRED.to_vec();
        vars[0] = ("PUBLIC_URL", "http://127.0.0.1:3000");
        assert_eq!(settings(&vars).unwrap_err().name, "PUBLIC_URL");

        vars.push(("B24_ALLOW_HTTP", "true"));
        assert!(settings(&vars).unwrap().allow_http);
    }

    #[test]
    fn malformed_values_are_rejected_by_name() {
        for (name, value) in [
            ("LISTEN_ADDR", "nowhere"),
            ("B24_ALLOW_HTTP", "maybe"),
            ("DATABASE_URL", "mysql://x"),
            ("B24_OAUTH_SERVERS", "ftp://oauth"),
            ("SESSION_TTL_MINUTES", "0"),
            ("IDLE_REFRESH_DAYS", "400"),
            ("REST_RATE_PER_SECOND", "-1"),
            ("RETRY_BASE_MS", "soon"),
            ("ENRICH_LEASE_SECONDS", "0"),
        ] {
            let mut vars = REQUIRED.to_vec();
            vars.push((name, value));
            assert_eq!(settings(&vars).unwrap_err().name, name, "{name}={value}");
        }
    }
}
