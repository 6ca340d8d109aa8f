//! Wire habits shared by the simulated servers: request parameters as PHP parses them, JSON as
//! PHP writes it, the platform's timestamps, and random ids.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A request parameter as PHP sees it: every scalar is a string and maps keep their order
/// (batch runs its commands in the order they were sent).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(String),
    Map(Vec<(String, Param)>),
}

impl Param {
    pub fn empty() -> Param {
        Param::Map(Vec::new())
    }

    /// Looks a key up ignoring case: the platform upper-cases the keys of most methods, so
    /// `entityTypeId`, `ENTITYTYPEID` and `entitytypeid` all work there too.
    pub fn get(&self, key: &str) -> Option<&Param> {
        self.entries()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Param::as_text)
    }

    /// A non-empty text parameter, trimmed.
    pub fn filled(&self, key: &str) -> Option<&str> {
        self.text(key).map(str::trim).filter(|s| !s.is_empty())
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.text(key).and_then(|s| s.trim().parse().ok())
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Param::Text(s) => Some(s),
            Param::Map(_) => None,
        }
    }

    pub fn entries(&self) -> &[(String, Param)] {
        match self {
            Param::Map(entries) => entries,
            Param::Text(_) => &[],
        }
    }

    /// The scalars of a parameter that may be sent as one value or as a list (`ID=1` or
    /// `ID[]=1&ID[]=2`).
    pub fn scalars(&self) -> Vec<&str> {
        match self {
            Param::Text(s) => vec![s.as_str()],
            Param::Map(entries) => entries.iter().filter_map(|(_, v)| v.as_text()).collect(),
        }
    }

    /// Top-level keys of `other` replace those of `self`, as PHP's `$_REQUEST` merge does.
    pub fn merge(&mut self, other: Param) {
        if let Param::Text(_) = self {
            *self = Param::empty();
        }
        let Param::Map(mine) = self else { return };
        for (key, value) in other.entries().iter().cloned() {
            match mine.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => mine.push((key, value)),
            }
        }
    }

    fn insert_path(&mut self, path: &[String], value: String) {
        if let Param::Text(_) = self {
            *self = Param::empty();
        }
        let Param::Map(entries) = self else { return };
        let (head, rest) = path.split_first().expect("a key has at least one part");

        // An empty part (`ID[]`) appends with the next index, like PHP.
        let key = if head.is_empty() {
            entries.len().to_string()
        } else {
            head.clone()
        };
        let slot = match entries.iter().position(|(k, _)| *k == key) {
            Some(i) => &mut entries[i].1,
            None => {
                entries.push((key, Param::empty()));
                &mut entries.last_mut().expect("just pushed").1
            }
        };

        if rest.is_empty() {
            *slot = Param::Text(value);
        } else {
            slot.insert_path(rest, value);
        }
    }
}

/// Parses an urlencoded string (query or form body) with PHP's bracket nesting.
pub(crate) fn parse_query(input: &str) -> Param {
    let mut root = Param::empty();
    for (key, value) in form_urlencoded::parse(input.as_bytes()) {
        let path = split_php_key(&key);
        root.insert_path(&path, value.into_owned());
    }
    root
}

/// `data[FIELDS][ID]` → `["data", "FIELDS", "ID"]`; a key that is not well formed stays whole.
pub(crate) fn split_php_key(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_string()];
    };
    if open == 0 || !key.ends_with(']') {
        return vec![key.to_string()];
    }

    let mut parts = vec![key[..open].to_string()];
    let mut rest = &key[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return vec![key.to_string()];
        };
        parts.push(inner[..close].to_string());
        rest = &inner[close + 1..];
    }
    if rest.is_empty() {
        parts
    } else {
        vec![key.to_string()]
    }
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamVisitor)
    }
}

/// Reads a JSON body into the same shape PHP's `json_decode` plus string casts would give.
struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<Param, E> {
        Ok(Param::Text(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Param, E> {
        Ok(Param::Text(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Param, E> {
        Ok(Param::Text(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Param, E> {
        Ok(Param::Text(v.to_string()))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Param, E> {
        // PHP casts true to "1" and false to "".
        Ok(Param::Text(if v { "1" } else { "" }.to_string()))
    }

    fn visit_unit<E>(self) -> Result<Param, E> {
        Ok(Param::Text(String::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Param, A::Error> {
        let mut entries = Vec::new();
        while let Some(value) = seq.next_element::<Param>()? {
            entries.push((entries.len().to_string(), value));
        }
        Ok(Param::Map(entries))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Param, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Param>()? {
            entries.push((key, value));
        }
        Ok(Param::Map(entries))
    }
}

/// A PHP array as `json_encode` writes it: empty or 0..n keyed arrays become JSON lists,
/// everything else an object. This is why an empty `result_error` arrives as `[]`.
pub(crate) fn php_array(entries: Vec<(String, Value)>) -> Value {
    let is_list = entries
        .iter()
        .enumerate()
        .all(|(i, (key, _))| *key == i.to_string());
    if is_list {
        return Value::Array(entries.into_iter().map(|(_, v)| v).collect());
    }
    Value::Object(entries.into_iter().collect::<Map<_, _>>())
}

/// JSON text as PHP's `json_encode` writes it by default: `/` escaped as `\/` and every
/// non-ASCII character as `\uXXXX`. Both only occur inside strings, so escaping the whole
/// text is safe.
pub(crate) fn php_json(value: &Value) -> String {
    let plain = value.to_string();
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn unix_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A timestamp as the portal writes it: ISO-8601 in the portal's zone (a fixed +03:00 here,
/// so a client that assumes UTC shows wrong times).
pub(crate) fn portal_time(t: SystemTime) -> String {
    let offset = UtcOffset::from_hms(3, 0, 0).expect("valid offset");
    OffsetDateTime::from(t)
        .to_offset(offset)
        .replace_nanosecond(0)
        .expect("zero is a valid nanosecond")
        .format(&Rfc3339)
        .expect("RFC 3339 formats every date after 1970")
}

/// The `time` block of every REST answer.
pub(crate) fn time_block(started: SystemTime) -> Value {
    let finished = SystemTime::now();
    let took = finished.duration_since(started).unwrap_or_default();
    json!({
        "start": unix_f64(started),
        "finish": unix_f64(finished),
        "duration": took.as_secs_f64(),
        "processing": took.as_secs_f64(),
        "date_start": portal_time(started),
        "date_finish": portal_time(finished),
        "operating": 0,
        "operating_reset_at": unix(finished + Duration::from_secs(600)),
    })
}

/// Random lowercase hex of `bytes` random bytes.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_keys_nest_and_append() {
        let p = parse_query("cmd%5Ba%5D=x&ID%5B%5D=1&ID%5B%5D=2&filter[ENTITY_ID]=S&plain=v");

        assert_eq!(p.get("cmd").and_then(|c| c.text("a")), Some("x"));
        assert_eq!(p.get("id").map(Param::scalars), Some(vec!["1", "2"]));
        assert_eq!(p.get("filter").and_then(|f| f.text("entity_id")), Some("S"));
        assert_eq!(p.text("plain"), Some("v"));
    }

    #[test]
    fn malformed_keys_stay_whole() {
        assert_eq!(split_php_key("a[b"), vec!["a[b"]);
        assert_eq!(split_php_key("[x]"), vec!["[x]"]);
        assert_eq!(split_php_key("a[b]c"), vec!["a[b]c"]);
        assert_eq!(split_php_key("a[b][]"), vec!["a", "b", ""]);
    }

    #[test]
    fn json_bodies_keep_order_and_become_strings() {
        let p: Param = serde_json::from_str(r#"{"cmd":{"z":"1","a":"2"},"halt":1,"x":true}"#)
            .expect("valid json");

        let keys: Vec<_> = p
            .get("cmd")
            .unwrap()
            .entries()
            .iter()
            .map(|e| &e.0)
            .collect();
        assert_eq!(keys, ["z", "a"]);
        assert_eq!(p.u64("halt"), Some(1));
        assert_eq!(p.text("x"), Some("1"));
    }

    #[test]
    fn php_arrays_serialize_like_php() {
        assert_eq!(php_array(vec![]), json!([]));
        assert_eq!(
            php_array(vec![("0".into(), json!(1)), ("1".into(), json!(2))]),
            json!([1, 2])
        );
        assert_eq!(php_array(vec![("a".into(), json!(1))]), json!({"a": 1}));
    }

    #[test]
    fn php_json_escapes_slashes_and_unicode() {
        assert_eq!(php_json(&json!({"any": "28/"})), r#"{"any":"28\/"}"#);
        assert_eq!(php_json(&json!("é😀")), r#""\u00e9\ud83d\ude00""#);
    }

    #[test]
    fn portal_time_has_an_offset_and_no_fraction() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_382_180_500);
        assert_eq!(portal_time(t), "2026-12-04T14:03:00+03:00");
    }
}
