//! Turning one item's events of a round into activity entries: which event carries the
//! difference, what a repeated delivery is, and how values are shown.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::diff::{Change, differences, initial_values, shown};
use super::names::{Names, Wanted, stage_list};
use crate::store::{LeasedEvent, NewEntry, PortalId};

/// What became of one item this round.
pub(super) enum Fetched {
    Item(Map<String, Value>),
    /// `NOT_FOUND`: deleted, or never visible.
    Gone,
    Inaccessible,
    /// Try again later, for this reason.
    Retry(String),
}

/// Keeps the last event of each dedup key; returns the kept ones and the ids of the others.
pub(super) fn drop_repeats_within(events: &[LeasedEvent]) -> (Vec<LeasedEvent>, Vec<i64>) {
    let mut kept: Vec<LeasedEvent> = Vec::new();
    let mut repeats = Vec::new();
    for event in events.iter().rev() {
        if kept.iter().any(|k| k.dedup_key == event.dedup_key) {
            repeats.push(event.id);
        } else {
            kept.push(event.clone());
        }
    }
    kept.reverse();
    (kept, repeats)
}

/// The entries for one item's events of this round, oldest first. The item was fetched once,
/// so only the newest event can carry the difference; the earlier ones say so.
pub(super) fn entries_for_item(
    portal: PortalId,
    events: &[LeasedEvent],
    previous: Option<&Map<String, Value>>,
    fetched: Option<&Fetched>,
    names: &Names,
) -> Vec<NewEntry> {
    let current = match fetched {
        Some(Fetched::Item(item)) => Some(item),
        _ => None,
    };
    let known = current.or(previous);
    let title = known
        .and_then(|item| item.get("title"))
        .and_then(Value::as_str)
        .map(str::to_owned);

    events
        .iter()
        .enumerate()
        .map(|(n, event)| {
            let newest = n + 1 == events.len();
            let (outcome, changes) = match (event.action.as_str(), fetched, current) {
                ("delete", _, _) => ("deleted", Vec::new()),
                (_, Some(Fetched::Gone), _) => ("deleted", Vec::new()),
                (_, Some(Fetched::Inaccessible), _) => ("inaccessible", Vec::new()),
                _ if !newest => ("collapsed", Vec::new()),
                (_, _, Some(item)) => match previous {
                    Some(before) => ("recorded", differences(before, item)),
                    // Created in this round: the creation is the starting point.
                    None if events.iter().any(|e| e.action == "add") => {
                        ("recorded", initial_values(item))
                    }
                    None => ("first_seen", Vec::new()),
                },
                _ => ("inaccessible", Vec::new()),
            };
            let category = known
                .and_then(|i| i.get("categoryId"))
                .and_then(number)
                .unwrap_or(0);
            let list = stage_list(event.entity_type_id, category);
            NewEntry {
                event_id: event.id,
                portal_id: portal,
                action: event.action.clone(),
                entity_type_id: event.entity_type_id,
                type_title: names.type_title(event.entity_type_id),
                item_id: event.item_id,
                item_title: title.clone(),
                user_id: event.user_id,
                user_name: event.user_id.and_then(|id| names.user(id)),
                occurred_at: event.event_ts,
                changes: Value::Array(
                    changes
                        .iter()
                        .map(|c| show_change(c, &list, names))
                        .collect(),
                ),
                outcome,
            }
        })
        .collect()
}

/// A change with its values as a reader wants them: stage and people by name.
fn show_change(change: &Change, list: &str, names: &Names) -> Value {
    let show = |value: &Value| -> String {
        let raw = shown(value);
        match change.field.as_str() {
            "stageId" => names.stage(list, &raw).unwrap_or(raw),
            "assignedById" | "observers" => match number(value) {
                Some(id) => names.user(id).unwrap_or(raw),
                None => raw,
            },
            _ => raw,
        }
    };
    change.to_json(show(&change.old), show(&change.new))
}

pub(super) fn wanted_names(
    items: &BTreeMap<(i64, i64), Vec<LeasedEvent>>,
    fetched: &HashMap<(i64, i64), Fetched>,
    previous: &HashMap<(i64, i64), Map<String, Value>>,
) -> Wanted {
    let mut wanted = Wanted::default();
    for (key, events) in items {
        wanted.types.insert(key.0);
        wanted.users.extend(events.iter().filter_map(|e| e.user_id));
        let states = [
            previous.get(key),
            match fetched.get(key) {
                Some(Fetched::Item(item)) => Some(item),
                _ => None,
            },
        ];
        for item in states.into_iter().flatten() {
            if let Some(id) = item.get("assignedById").and_then(number) {
                wanted.users.insert(id);
            }
            let category = item.get("categoryId").and_then(number).unwrap_or(0);
            if item.get("stageId").is_some() {
                wanted.stage_lists.insert(stage_list(key.0, category));
            }
        }
    }
    wanted
}

pub(super) fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(id: i64, action: &str) -> LeasedEvent {
        LeasedEvent {
            id,
            portal_id: PortalId(1),
            action: action.into(),
            entity_type_id: 1220,
            item_id: 24,
            user_id: Some(1),
            event_ts: 1,
            attempts: 1,
            dedup_key: format!("k{id}"),
        }
    }

    #[test]
    fn only_the_newest_event_of_a_round_carries_the_difference() {
        let before = json!({"title": "A", "opportunity": 100})
            .as_object()
            .unwrap()
            .clone();
        let after = json!({"title": "A", "opportunity": 250})
            .as_object()
            .unwrap()
            .clone();
        let events = [event(1, "update"), event(2, "update")];

        let entries = entries_for_item(
            PortalId(1),
            &events,
            Some(&before),
            Some(&Fetched::Item(after)),
            &Names::default(),
        );
        assert_eq!(entries[0].outcome, "collapsed");
        assert_eq!(entries[1].outcome, "recorded");
        assert_eq!(entries[1].changes[0]["field"], "opportunity");
        assert_eq!(entries[1].changes[0]["old"], "100");
        assert_eq!(entries[1].item_title.as_deref(), Some("A"));
    }

    #[test]
    fn a_key_repeated_within_a_round_keeps_its_last_event() {
        let mut repeat = event(3, "update");
        repeat.dedup_key = "k1".into();
        let (kept, repeats) =
            drop_repeats_within(&[event(1, "update"), event(2, "update"), repeat]);
        assert_eq!(kept.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(repeats, [1]);
    }

    #[test]
    fn a_gone_item_keeps_its_last_known_title() {
        let before = json!({"title": "Old"}).as_object().unwrap().clone();
        let entries = entries_for_item(
            PortalId(1),
            &[event(1, "update")],
            Some(&before),
            Some(&Fetched::Gone),
            &Names::default(),
        );
        assert_eq!(entries[0].outcome, "deleted");
        assert_eq!(entries[0].item_title.as_deref(), Some("Old"));
    }

    #[test]
    fn an_item_seen_first_by_an_update_is_a_starting_point() {
        let after = json!({"title": "X"}).as_object().unwrap().clone();
        let entries = entries_for_item(
            PortalId(1),
            &[event(1, "update")],
            None,
            Some(&Fetched::Item(after)),
            &Names::default(),
        );
        assert_eq!(entries[0].outcome, "first_seen");
        assert!(entries[0].changes.as_array().unwrap().is_empty());
    }
}
