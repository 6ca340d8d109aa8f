//! Outgoing events: bodies encoded exactly as the platform puts them on the wire (PHP-style
//! bracket keys, percent-encoded, every value a string) and delivered once, never retried.

use std::time::{Duration, SystemTime};

use super::oauth::SCOPE;
use super::tokens::Holder;
use super::wire::unix;
use super::{Changer, Delivery, Install, Simulator, World};

/// How long the platform waits for a handler before giving up on the event.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `auth[...]` block of an event.
pub(crate) struct EventAuth {
    /// Present only when a user caused the event (or for ONAPPINSTALL).
    pub user: Option<UserTokens>,
    pub domain: String,
    pub client_endpoint: String,
    pub server_endpoint: String,
    pub member_id: String,
    pub application_token: String,
}

pub(crate) struct UserTokens {
    pub access_token: String,
    pub expires: u64,
    pub expires_in: u64,
    pub scope: String,
    pub status: String,
    pub user_id: u64,
    /// Only ONAPPINSTALL carries a refresh token.
    pub refresh_token: Option<String>,
}

/// One event body on its way to one handler.
pub(crate) struct Outgoing {
    pub handler: String,
    pub event: String,
    pub body: String,
}

/// Encodes an event body. Keys come in the order captured from the platform; `data` pairs are
/// given as the part inside `data[...]`, e.g. `("FIELDS][ID", "24")` for `data[FIELDS][ID]`.
pub(crate) fn encode_event(
    event: &str,
    handler_id: Option<u64>,
    data: &[(&str, String)],
    ts: u64,
    auth: &EventAuth,
) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("event", event);
    if let Some(id) = handler_id {
        form.append_pair("event_handler_id", &id.to_string());
    }
    for (key, value) in data {
        form.append_pair(&format!("data[{key}]"), value);
    }
    form.append_pair("ts", &ts.to_string());

    let mut put = |key: &str, value: &str| {
        form.append_pair(&format!("auth[{key}]"), value);
    };
    match &auth.user {
        Some(user) => {
            put("access_token", &user.access_token);
            put("expires", &user.expires.to_string());
            put("expires_in", &user.expires_in.to_string());
            put("scope", &user.scope);
            put("domain", &auth.domain);
            put("server_endpoint", &auth.server_endpoint);
            put("status", &user.status);
            put("client_endpoint", &auth.client_endpoint);
            put("member_id", &auth.member_id);
            put("user_id", &user.user_id.to_string());
            if let Some(refresh) = &user.refresh_token {
                put("refresh_token", refresh);
            }
            put("application_token", &auth.application_token);
        }
        None => {
            put("domain", &auth.domain);
            put("client_endpoint", &auth.client_endpoint);
            put("server_endpoint", &auth.server_endpoint);
            put("member_id", &auth.member_id);
            put("application_token", &auth.application_token);
        }
    }
    form.finish()
}

/// An item event (ADD, UPDATE, DELETE) for every online handler bound to it, each with a
/// fresh token of the user whose credentials the handler gets.
pub(crate) fn plan_item_event(
    sim: &Simulator,
    world: &mut World,
    portal: usize,
    event: &str,
    entity_type_id: u64,
    id: u64,
    by: Changer,
) -> Vec<Outgoing> {
    let event = event.to_ascii_uppercase();
    let state = &world.portals[portal];
    if state.install != Install::Installed {
        return Vec::new();
    }
    let targets = state.hooks.targets(&event);
    let data = [
        ("FIELDS][ID", id.to_string()),
        ("FIELDS][ENTITY_TYPE_ID", entity_type_id.to_string()),
    ];

    let mut out = Vec::new();
    for target in targets {
        let user_id = match (target.auth_type, by) {
            (0, Changer::User(user)) => Some(user),
            (0, Changer::Robot) => None,
            (forced, _) => Some(forced),
        };
        let mut auth = bare_auth(sim, world, portal);
        auth.user = user_id.map(|user_id| user_tokens(sim, world, portal, user_id, false));

        let body = encode_event(&event, Some(target.handler_id), &data, now(), &auth);
        out.push(Outgoing {
            handler: target.handler,
            event: event.clone(),
            body,
        });
    }
    out
}

/// ONAPPINSTALL with a fresh token pair of the installing administrator.
pub(crate) fn plan_install(sim: &Simulator, world: &mut World, portal: usize) -> Vec<Outgoing> {
    let installer = world.portals[portal].installer;
    let data = [
        ("VERSION", "1".to_string()),
        ("ACTIVE", "Y".to_string()),
        ("INSTALLED", "Y".to_string()),
        ("LANGUAGE_ID", "en".to_string()),
    ];

    let mut out = Vec::new();
    for target in world.portals[portal].hooks.targets("ONAPPINSTALL") {
        let mut auth = bare_auth(sim, world, portal);
        auth.user = Some(user_tokens(sim, world, portal, installer, true));
        out.push(Outgoing {
            handler: target.handler,
            event: "ONAPPINSTALL".to_string(),
            body: encode_event("ONAPPINSTALL", None, &data, now(), &auth),
        });
    }
    out
}

/// ONAPPUNINSTALL: no tokens, since every token of the app dies with it.
pub(crate) fn plan_uninstall(
    sim: &Simulator,
    world: &World,
    portal: usize,
    clean: bool,
) -> Vec<Outgoing> {
    let data = [
        ("CLEAN", if clean { "1" } else { "0" }.to_string()),
        ("LANGUAGE_ID", "en".to_string()),
    ];
    let auth = bare_auth(sim, world, portal);

    world.portals[portal]
        .hooks
        .targets("ONAPPUNINSTALL")
        .into_iter()
        .map(|target| Outgoing {
            handler: target.handler,
            event: "ONAPPUNINSTALL".to_string(),
            body: encode_event("ONAPPUNINSTALL", None, &data, now(), &auth),
        })
        .collect()
}

/// Sends the bodies one after another. A failure is recorded and forgotten, as the platform
/// does: there are no retries.
pub(crate) async fn deliver(sim: &Simulator, outgoing: Vec<Outgoing>) -> Vec<Delivery> {
    let mut deliveries = Vec::with_capacity(outgoing.len());
    for item in outgoing {
        let sent = sim
            .http()
            .post(&item.handler)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(item.body)
            .timeout(DELIVERY_TIMEOUT)
            .send()
            .await;

        let status = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the answer so the connection can be reused; its content is ignored.
                let _ = response.bytes().await;
                Some(status)
            }
            Err(_) => None,
        };
        deliveries.push(Delivery {
            handler: item.handler,
            event: item.event,
            status,
        });
    }
    deliveries
}

fn bare_auth(sim: &Simulator, world: &World, portal: usize) -> EventAuth {
    let state = &world.portals[portal];
    EventAuth {
        user: None,
        domain: state.domain(),
        client_endpoint: state.client_endpoint(),
        server_endpoint: sim.server_endpoint(),
        member_id: state.member_id.clone(),
        application_token: state.application_token.clone().unwrap_or_default(),
    }
}

fn user_tokens(
    sim: &Simulator,
    world: &mut World,
    portal: usize,
    user_id: u64,
    with_refresh: bool,
) -> UserTokens {
    let holder = Holder { portal, user_id };
    let ttl = sim.config().access_token_ttl;
    let (access, refresh_token) = if with_refresh {
        let pair = world.tokens.issue_pair(holder, ttl);
        (pair.access, Some(pair.refresh_token))
    } else {
        (world.tokens.issue_access(holder, ttl), None)
    };

    UserTokens {
        access_token: access.access_token,
        expires: access.expires,
        expires_in: access.expires_in,
        scope: SCOPE.to_string(),
        status: "L".to_string(),
        user_id,
        refresh_token,
    }
}

fn now() -> u64 {
    unix(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: &str = "a223c6b3710f85df22e9377d6c4f7553";
    const APP_TOKEN: &str = "51856fefc120afa4b628cc82d3935cce";

    /// Reads a wire fixture from the repository's copy.
    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/wire/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        text.trim_end().to_string()
    }

    fn portal_auth(user: Option<UserTokens>) -> EventAuth {
        EventAuth {
            user,
            domain: "some-domain.bitrix24.com".into(),
            client_endpoint: "https://some-domain.bitrix24.com/rest/".into(),
            server_endpoint: "https://oauth.bitrix.info/rest/".into(),
            member_id: MEMBER.into(),
            application_token: APP_TOKEN.into(),
        }
    }

    fn item_data() -> [(&'static str, String); 2] {
        [
            ("FIELDS][ID", "24".into()),
            ("FIELDS][ENTITY_TYPE_ID", "1220".into()),
        ]
    }

    fn sorted_keys(body: &str) -> Vec<String> {
        let mut keys: Vec<String> = form_urlencoded::parse(body.as_bytes())
            .map(|(k, _)| k.into_owned())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_user_caused_update_matches_the_fixture() {
        let user = UserTokens {
            access_token: "s6p6eclrvim6da22ft9ch94ekreb52lv".into(),
            expires: 1723542117,
            expires_in: 3600,
            scope: "crm".into(),
            status: "F".into(),
            user_id: 1,
            refresh_token: None,
        };
        let expected = fixture("event_oncrmdynamicitemupdate.form");

        let body = encode_event(
            "ONCRMDYNAMICITEMUPDATE",
            Some(5),
            &item_data(),
            1723538517,
            &portal_auth(Some(user)),
        );

        assert_eq!(sorted_keys(&body), sorted_keys(&expected));
        assert!(body.contains("data%5BFIELDS%5D%5BID%5D=24"));
        assert_eq!(body, expected);
    }

    #[test]
    fn a_robot_caused_update_carries_no_token() {
        let expected = fixture("event_oncrmdynamicitemupdate_no_token.form");

        let body = encode_event(
            "ONCRMDYNAMICITEMUPDATE",
            Some(5),
            &item_data(),
            1723538517,
            &portal_auth(None),
        );

        assert_eq!(body, expected);
        assert!(!body.contains("access_token"));
    }

    #[test]
    fn app_install_and_uninstall_match_the_fixtures() {
        let user = UserTokens {
            access_token: "69ecb16200fa1c2e004f4a3c00000001000007a3f2f6e6f3b5e0b5f5d0b1a2c3d4e5f6"
                .into(),
            expires: 1655827561,
            expires_in: 3600,
            scope: "crm,placement,user_brief".into(),
            status: "F".into(),
            user_id: 1,
            refresh_token: Some(
                "596bd96200fa1c2e004f4a3c00000001000007d1c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9".into(),
            ),
        };
        let install_data = [
            ("VERSION", "1".to_string()),
            ("ACTIVE", "Y".to_string()),
            ("INSTALLED", "Y".to_string()),
            ("LANGUAGE_ID", "en".to_string()),
        ];
        let uninstall_data = [
            ("CLEAN", "1".to_string()),
            ("LANGUAGE_ID", "en".to_string()),
        ];

        let install = encode_event(
            "ONAPPINSTALL",
            None,
            &install_data,
            1655823961,
            &portal_auth(Some(user)),
        );
        let uninstall = encode_event(
            "ONAPPUNINSTALL",
            None,
            &uninstall_data,
            1655823904,
            &portal_auth(None),
        );

        assert_eq!(install, fixture("event_onappinstall.form"));
        assert_eq!(uninstall, fixture("event_onappuninstall.form"));
    }
}
