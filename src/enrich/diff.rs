//! Field-level differences between two states of a smart-process item.

use serde_json::{Map, Value, json};

/// Fields that change on every save or never say anything a reader wants.
const IGNORED: &[&str] = &[
    "id",
    "entityTypeId",
    "createdTime",
    "createdBy",
    "updatedTime",
    "updatedBy",
    "movedTime",
    "movedBy",
    "lastActivityTime",
    "lastActivityBy",
    "lastCommunicationTime",
    "lastCommunicationCallTime",
    "lastCommunicationEmailTime",
    "lastCommunicationImolTime",
    "lastCommunicationWebformTime",
];

/// One changed field, with raw values (names are filled in later).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

impl Change {
    pub fn to_json(&self, old_shown: String, new_shown: String) -> Value {
        json!({
            "field": self.field,
            "old": old_shown,
            "new": new_shown,
        })
    }
}

/// The fields whose values differ between `old` and `new`, in a stable order: standard
/// fields first as the platform lists them, then custom fields by name.
pub fn differences(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<Change> {
    let mut fields: Vec<&String> = old
        .keys()
        .chain(new.keys())
        .filter(|f| !IGNORED.contains(&f.as_str()))
        .collect();
    fields.sort_by_key(|f| (f.starts_with("ufCrm"), order(f), f.to_string()));
    fields.dedup();

    fields
        .into_iter()
        .filter_map(|field| {
            let (before, after) = (
                old.get(field).unwrap_or(&Value::Null),
                new.get(field).unwrap_or(&Value::Null),
            );
            (!same(before, after)).then(|| Change {
                field: field.clone(),
                old: before.clone(),
                new: after.clone(),
            })
        })
        .collect()
}

/// The starting point of an item created just now: every field that holds something.
pub fn initial_values(new: &Map<String, Value>) -> Vec<Change> {
    differences(&Map::new(), new)
}

/// Equal for a reader: `100` and `"100.00"`, `null` and `""` are the same value.
fn same(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (number(a), number(b)) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => is_empty(a) && is_empty(b),
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if !s.trim().is_empty() => s.trim().parse().ok(),
        _ => None,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// A value as text for the log.
pub fn shown(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(", "),
        Value::Object(_) => value.to_string(),
    }
}

fn order(field: &str) -> usize {
    const ORDER: &[&str] = &[
        "title",
        "stageId",
        "categoryId",
        "opportunity",
        "currencyId",
        "assignedById",
        "begindate",
        "closedate",
    ];
    ORDER
        .iter()
        .position(|f| *f == field)
        .unwrap_or(ORDER.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn changed_fields_come_with_old_and_new_values() {
        let old = item(
            json!({"id": 24, "title": "Invoice", "stageId": "DT1220_30:NEW", "opportunity": 100,
            "updatedTime": "2026-12-04T10:00:00+03:00", "ufCrm5_Color": "red"}),
        );
        let new = item(
            json!({"id": 24, "title": "Invoice", "stageId": "DT1220_30:WON", "opportunity": 250,
            "updatedTime": "2026-12-04T11:00:00+03:00", "ufCrm5_Color": "blue"}),
        );

        let changes = differences(&old, &new);
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["stageId", "opportunity", "ufCrm5_Color"]);
        assert_eq!(changes[1].old, json!(100));
        assert_eq!(changes[1].new, json!(250));
    }

    #[test]
    fn equal_values_in_other_spellings_are_no_change() {
        let old = item(json!({"opportunity": 100, "comments": null, "observers": []}));
        let new = item(json!({"opportunity": "100.00", "comments": "", "observers": []}));
        assert!(differences(&old, &new).is_empty());
    }

    #[test]
    fn fields_that_appear_or_vanish_count() {
        let old = item(json!({"title": "a"}));
        let new = item(json!({"title": "a", "ufCrm5_Size": 3}));
        assert_eq!(
            differences(&old, &new),
            vec![Change {
                field: "ufCrm5_Size".into(),
                old: Value::Null,
                new: json!(3)
            }]
        );
        assert_eq!(differences(&new, &old)[0].new, Value::Null);
    }

    #[test]
    fn a_new_item_starts_from_its_filled_fields() {
        let new = item(json!({"id": 1, "title": "New one", "comments": "", "opportunity": 5}));
        let fields: Vec<String> = initial_values(&new).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["title", "opportunity"]);
    }

    #[test]
    fn values_read_as_text() {
        assert_eq!(shown(&json!(null)), "");
        assert_eq!(shown(&json!([1, 2])), "1, 2");
        assert_eq!(shown(&json!(true)), "yes");
    }
}
