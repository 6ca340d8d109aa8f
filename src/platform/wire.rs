//! The platform's wire formats: PHP-style bracket forms, event bodies and frame posts.
//!
//! Bodies are first turned into one JSON tree whatever their encoding, then read leniently:
//! the platform sends every value as a string, JSON callers may send numbers, and optional keys
//! come and go.

use serde_json::{Map, Value};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("body is not valid form data or JSON")]
    Unreadable,
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {0} is malformed")]
    Malformed(&'static str),
}

/// Parses an `application/x-www-form-urlencoded` body with PHP-style keys
/// (`data[FIELDS][ID]=24`, brackets raw or percent-encoded) into a JSON tree of strings.
pub fn parse_form(body: &[u8]) -> Result<Value, WireError> {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        let path = split_key(&key).ok_or(WireError::Unreadable)?;
        insert_path(&mut root, &path, Value::String(value.into_owned()))?;
    }
    Ok(Value::Object(root))
}

/// Parses a body that is either JSON (an object) or a bracket form.
pub fn parse_body(body: &[u8], is_json: bool) -> Result<Value, WireError> {
    let looks_like_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_json || looks_like_json {
        match serde_json::from_slice::<Value>(body) {
            Ok(value @ Value::Object(_)) => Ok(value),
            _ => Err(WireError::Unreadable),
        }
    } else {
        std::str::from_utf8(body).map_err(|_| WireError::Unreadable)?;
        parse_form(body)
    }
}

/// `a[b][c]` -> `["a", "b", "c"]`; `a[]` -> `["a", ""]` (append).
fn split_key(key: &str) -> Option<Vec<&str>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return None;
    }
    let mut path = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        path.push(&inner[..end]);
        rest = &inner[end + 1..];
    }
    (path.len() <= 8).then_some(path)
}

fn insert_path(map: &mut Map<String, Value>, path: &[&str], value: Value) -> Result<(), WireError> {
    let (first, rest) = path.split_first().ok_or(WireError::Unreadable)?;
    let key = if first.is_empty() {
        map.len().to_string()
    } else {
        (*first).to_owned()
    };
    if rest.is_empty() {
        map.insert(key, value);
        return Ok(());
    }
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    match child {
        Value::Object(inner) => insert_path(inner, rest, value),
        // A key given both as a scalar and as a parent: the body contradicts itself.
        _ => Err(WireError::Unreadable),
    }
}

/// Reads a string at `path`, accepting numbers as their decimal text.
pub fn text(tree: &Value, path: &[&str]) -> Option<String> {
    let mut node = tree;
    for key in path {
        node = node.get(key)?;
    }
    match node {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a non-negative integer at `path` from a string or a number.
pub fn integer(tree: &Value, path: &[&str], name: &'static str) -> Result<Option<i64>, WireError> {
    match text(tree, path) {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or(WireError::Malformed(name)),
    }
}

/// The events this app binds and understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    ItemAdd,
    ItemUpdate,
    ItemDelete,
    AppInstall,
    AppUninstall,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::ItemAdd,
        EventKind::ItemUpdate,
        EventKind::ItemDelete,
        EventKind::AppInstall,
        EventKind::AppUninstall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::ItemAdd => "ONCRMDYNAMICITEMADD",
            EventKind::ItemUpdate => "ONCRMDYNAMICITEMUPDATE",
            EventKind::ItemDelete => "ONCRMDYNAMICITEMDELETE",
            EventKind::AppInstall => "ONAPPINSTALL",
            EventKind::AppUninstall => "ONAPPUNINSTALL",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    /// The short name stored with each log entry.
    pub fn action(self) -> &'static str {
        match self {
            EventKind::ItemAdd => "add",
            EventKind::ItemUpdate => "update",
            EventKind::ItemDelete => "delete",
            EventKind::AppInstall => "install",
            EventKind::AppUninstall => "uninstall",
        }
    }
}

/// The `auth` block of an event. Only `member_id` and `application_token` are always there.
#[derive(Debug, Default)]
pub struct EventAuth {
    pub member_id: String,
    pub application_token: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<i64>,
    pub user_id: Option<i64>,
    pub domain: Option<String>,
    pub client_endpoint: Option<String>,
    pub server_endpoint: Option<String>,
}

/// An event as delivered to `/events`.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    pub auth: EventAuth,
    /// Smart-process type and item, for item events.
    pub item: Option<(i64, i64)>,
    /// `data[CLEAN]=1` on uninstall.
    pub clean: bool,
    /// The platform's timestamp (unix seconds), when given.
    pub ts: Option<i64>,
    /// The platform's own event id, when given.
    pub event_id: Option<String>,
}

/// Why an event body was refused before anything was stored.
#[derive(Debug, PartialEq, Eq)]
pub enum EventRejection {
    Wire(WireError),
    UnknownEvent,
}

impl Event {
    pub fn from_tree(tree: &Value) -> Result<Event, EventRejection> {
        let name =
            text(tree, &["event"]).ok_or(EventRejection::Wire(WireError::Missing("event")))?;
        let kind = EventKind::from_name(&name).ok_or(EventRejection::UnknownEvent)?;
        let wire = EventRejection::Wire;

        let member_id = text(tree, &["auth", "member_id"])
            .ok_or(wire(WireError::Missing("auth[member_id]")))?;
        if !is_member_id(&member_id) {
            return Err(wire(WireError::Malformed("auth[member_id]")));
        }
        let auth = EventAuth {
            member_id,
            application_token: text(tree, &["auth", "application_token"]),
            access_token: text(tree, &["auth", "access_token"]),
            refresh_token: text(tree, &["auth", "refresh_token"]),
            expires_in: integer(tree, &["auth", "expires_in"], "auth[expires_in]").map_err(wire)?,
            // A user id without a user token is not the platform's word about who acted.
            user_id: match text(tree, &["auth", "access_token"]) {
                Some(_) => integer(tree, &["auth", "user_id"], "auth[user_id]").map_err(wire)?,
                None => None,
            },
            domain: text(tree, &["auth", "domain"]),
            client_endpoint: text(tree, &["auth", "client_endpoint"]),
            server_endpoint: text(tree, &["auth", "server_endpoint"]),
        };

        let item = match kind {
            EventKind::ItemAdd | EventKind::ItemUpdate | EventKind::ItemDelete => {
                let id = integer(tree, &["data", "FIELDS", "ID"], "data[FIELDS][ID]")
                    .map_err(wire)?
                    .ok_or(wire(WireError::Missing("data[FIELDS][ID]")))?;
                let type_id = integer(
                    tree,
                    &["data", "FIELDS", "ENTITY_TYPE_ID"],
                    "data[FIELDS][ENTITY_TYPE_ID]",
                )
                .map_err(wire)?
                .ok_or(wire(WireError::Missing("data[FIELDS][ENTITY_TYPE_ID]")))?;
                Some((type_id, id))
            }
            _ => None,
        };

        Ok(Event {
            kind,
            auth,
            item,
            clean: text(tree, &["data", "CLEAN"])
                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("Y")),
            ts: integer(tree, &["ts"], "ts").map_err(wire)?,
            event_id: text(tree, &["event_id"]).filter(|id| id.len() <= 64),
        })
    }
}

/// A portal id: 32 hex characters on every portal seen; allow a little slack.
pub fn is_member_id(value: &str) -> bool {
    (8..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// What the portal posts when it opens the app or its installer in a frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub domain: Option<String>,
    pub https: bool,
    pub lang: String,
    pub auth_id: String,
    pub auth_expires: Option<i64>,
    pub refresh_id: Option<String>,
    pub member_id: String,
    pub server_endpoint: Option<String>,
    pub application_token: Option<String>,
    pub status: Option<String>,
    pub placement: String,
    pub placement_options: Value,
}

impl Frame {
    /// Reads a frame from its query string and form body.
    pub fn parse(query: &str, body: &[u8]) -> Result<Frame, WireError> {
        let query = parse_form(query.as_bytes())?;
        let form = parse_form(body)?;
        let field = |name: &'static str| text(&form, &[name]).or_else(|| text(&query, &[name]));

        let member_id = field("member_id").ok_or(WireError::Missing("member_id"))?;
        if !is_member_id(&member_id) {
            return Err(WireError::Malformed("member_id"));
        }
        let placement_options = match field("PLACEMENT_OPTIONS") {
            None => Value::Object(Map::new()),
            Some(raw) => {
                serde_json::from_str(&raw).map_err(|_| WireError::Malformed("PLACEMENT_OPTIONS"))?
            }
        };

        Ok(Frame {
            domain: field("DOMAIN"),
            https: field("PROTOCOL").as_deref() != Some("0"),
            lang: field("LANG").unwrap_or_else(|| "en".to_owned()),
            auth_id: field("AUTH_ID").ok_or(WireError::Missing("AUTH_ID"))?,
            auth_expires: field("AUTH_EXPIRES").and_then(|v| v.parse().ok()),
            refresh_id: field("REFRESH_ID"),
            member_id,
            server_endpoint: field("SERVER_ENDPOINT"),
            application_token: field("APPLICATION_TOKEN"),
            status: field("status"),
            placement: field("PLACEMENT").unwrap_or_else(|| "DEFAULT".to_owned()),
            placement_options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/wire/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn event(name: &str) -> Event {
        let body = fixture(name);
        Event::from_tree(&parse_body(body.trim_ascii(), false).unwrap()).unwrap()
    }

    #[test]
    fn brackets_nest_whether_encoded_or_not() {
        let raw = parse_form(b"data[FIELDS][ID]=24&auth[member_id]=abc").unwrap();
        let encoded = parse_form(b"data%5BFIELDS%5D%5BID%5D=24&auth%5Bmember_id%5D=abc").unwrap();
        assert_eq!(raw, encoded);
        assert_eq!(text(&raw, &["data", "FIELDS", "ID"]).as_deref(), Some("24"));
    }

    #[test]
    fn a_key_that_is_both_value_and_parent_is_unreadable() {
        assert_eq!(parse_form(b"a=1&a[b]=2"), Err(WireError::Unreadable));
        assert_eq!(parse_form(b"a[b=2"), Err(WireError::Unreadable));
    }

    #[test]
    fn user_update_fixture_carries_item_and_user() {
        let e = event("event_oncrmdynamicitemupdate.form");
        assert_eq!(e.kind, EventKind::ItemUpdate);
        assert_eq!(e.item, Some((1220, 24)));
        assert_eq!(e.auth.member_id, "a223c6b3710f85df22e9377d6c4f7553");
        assert_eq!(
            e.auth.application_token.as_deref(),
            Some("51856fefc120afa4b628cc82d3935cce")
        );
        assert_eq!(e.auth.user_id, Some(1));
        assert_eq!(e.ts, Some(1723538517));
    }

    #[test]
    fn robot_update_fixture_has_no_user() {
        let e = event("event_oncrmdynamicitemupdate_no_token.form");
        assert_eq!(e.item, Some((1220, 24)));
        assert_eq!(e.auth.access_token, None);
        assert_eq!(e.auth.user_id, None);
        assert!(e.auth.application_token.is_some());
    }

    #[test]
    fn install_fixture_carries_a_token_pair() {
        let e = event("event_onappinstall.form");
        assert_eq!(e.kind, EventKind::AppInstall);
        assert!(e.auth.access_token.is_some() && e.auth.refresh_token.is_some());
        assert_eq!(
            e.auth.server_endpoint.as_deref(),
            Some("https://oauth.bitrix.info/rest/")
        );
        assert_eq!(e.item, None);
    }

    #[test]
    fn uninstall_fixture_asks_for_clean() {
        let e = event("event_onappuninstall.form");
        assert_eq!(e.kind, EventKind::AppUninstall);
        assert!(e.clean);
        assert_eq!(e.auth.access_token, None);
    }

    #[test]
    fn json_bodies_read_like_forms() {
        let json = br#"{"event":"onCrmDynamicItemUpdate","data":{"FIELDS":{"ID":24,"ENTITY_TYPE_ID":"1220"}},
            "ts":"1723538517","auth":{"member_id":"a223c6b3710f85df22e9377d6c4f7553","application_token":"t"}}"#;
        let e = Event::from_tree(&parse_body(json, true).unwrap()).unwrap();
        assert_eq!(e.kind, EventKind::ItemUpdate);
        assert_eq!(e.item, Some((1220, 24)));
    }

    #[test]
    fn bad_event_bodies_say_what_is_wrong() {
        let cases: [(&[u8], EventRejection); 4] = [
            (b"event=ONCRMDYNAMICITEMUPDATE", EventRejection::Wire(WireError::Missing("auth[member_id]"))),
            (b"event=ONSOMETHINGELSE&auth[member_id]=a223c6b3710f85df", EventRejection::UnknownEvent),
            (
                b"event=ONCRMDYNAMICITEMUPDATE&auth[member_id]=a223c6b3710f85df&data[FIELDS][ID]=x&data[FIELDS][ENTITY_TYPE_ID]=1",
                EventRejection::Wire(WireError::Malformed("data[FIELDS][ID]")),
            ),
            (b"auth[member_id]=a223c6b3710f85df", EventRejection::Wire(WireError::Missing("event"))),
        ];
        for (body, expected) in cases {
            let tree = parse_body(body, false).unwrap();
            assert_eq!(Event::from_tree(&tree).unwrap_err(), expected);
        }
        assert_eq!(parse_body(b"{not json", true), Err(WireError::Unreadable));
        assert_eq!(parse_body(b"[1,2]", true), Err(WireError::Unreadable));
    }

    #[test]
    fn default_frame_fixture_parses() {
        let query = String::from_utf8(fixture("frame_open_default.query")).unwrap();
        let frame = Frame::parse(
            query.trim(),
            fixture("frame_open_default.form").trim_ascii(),
        )
        .unwrap();
        assert_eq!(frame.domain.as_deref(), Some("some-domain.bitrix24.com"));
        assert!(frame.https);
        assert_eq!(frame.lang, "en");
        assert_eq!(frame.member_id, "a223c6b3710f85df22e9377d6c4f7553");
        assert_eq!(frame.placement, "DEFAULT");
        assert_eq!(frame.placement_options["any"], "28/");
        assert_eq!(
            frame.server_endpoint.as_deref(),
            Some("https://oauth.bitrix.info/rest/")
        );
    }

    #[test]
    fn card_tab_frame_fixture_names_the_item() {
        let frame = Frame::parse("", fixture("frame_open_dynamic_tab.form").trim_ascii()).unwrap();
        assert_eq!(frame.placement, "CRM_DYNAMIC_1220_DETAIL_TAB");
        assert_eq!(frame.placement_options["ID"], "24");
    }

    #[test]
    fn a_frame_without_a_token_is_refused() {
        let err = Frame::parse("", b"member_id=a223c6b3710f85df22e9377d6c4f7553").unwrap_err();
        assert_eq!(err, WireError::Missing("AUTH_ID"));
    }
}
