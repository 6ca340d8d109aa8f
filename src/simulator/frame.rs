//! `Frame`, what the portal POSTs into its iframe, with the small edits tests make to forge
//! one, and what the app answered.

/// What the portal POSTs when it opens the app in its iframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `DOMAIN`, `PROTOCOL`, `LANG`, `APP_SID`, urlencoded.
    pub query: String,
    /// The form body, urlencoded.
    pub form: String,
    pub auth_id: String,
    pub refresh_id: String,
}

/// What the app answered to a frame POST (redirects are not followed).
#[derive(Debug, Clone)]
pub struct FrameResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Frame {
    pub fn with_lang(self, lang: &str) -> Frame {
        self.with_query_field("LANG", lang)
    }

    /// Sets (or adds) a query field, e.g. a forged `DOMAIN`.
    pub fn with_query_field(mut self, key: &str, value: &str) -> Frame {
        self.query = replace_field(&self.query, key, Some(value));
        self
    }

    /// Sets (or adds) a form field, e.g. another portal's `member_id`.
    pub fn with_form_field(mut self, key: &str, value: &str) -> Frame {
        self.form = replace_field(&self.form, key, Some(value));
        self
    }

    pub fn without_form_field(mut self, key: &str) -> Frame {
        self.form = replace_field(&self.form, key, None);
        self
    }

    pub fn form_field(&self, key: &str) -> Option<String> {
        field(&self.form, key)
    }

    pub fn query_field(&self, key: &str) -> Option<String> {
        field(&self.query, key)
    }

    /// The form fields in order, as the portal page puts them in hidden inputs.
    pub(crate) fn form_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.form.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

fn field(encoded: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(encoded.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Re-encodes `encoded` with `key` set to `value` (in place, or appended), or removed.
fn replace_field(encoded: &str, key: &str, value: Option<&str>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut seen = false;
    for (k, v) in form_urlencoded::parse(encoded.as_bytes()) {
        if k != key {
            out.append_pair(&k, &v);
        } else if let (Some(value), false) = (value, seen) {
            out.append_pair(&k, value);
            seen = true;
        }
    }
    if let (Some(value), false) = (value, seen) {
        out.append_pair(key, value);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_fields_can_be_replaced_added_and_removed() {
        let frame = Frame {
            query: "DOMAIN=a&LANG=en".into(),
            form: "AUTH_ID=x&member_id=m".into(),
            auth_id: "x".into(),
            refresh_id: "y".into(),
        };

        let changed = frame
            .with_lang("de")
            .with_form_field("member_id", "other")
            .with_form_field("EXTRA", "a b")
            .without_form_field("AUTH_ID");

        assert_eq!(changed.query, "DOMAIN=a&LANG=de");
        assert_eq!(changed.form, "member_id=other&EXTRA=a+b");
        assert_eq!(changed.form_field("EXTRA").as_deref(), Some("a b"));
    }
}
