//! Names instead of ids: type titles, people and stages, cached per portal with an expiry and
//! fetched in one `batch` when missing. Whatever cannot be resolved is shown as its id.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::platform::portal::{PortalClient, batch_command};
use crate::store::{PortalId, Store};

/// How long a resolved name is trusted.
const NAME_TTL_SECS: i64 = 3600;
/// How long "this id has no name" is remembered, so it is not asked for on every event.
const MISSING_TTL_SECS: i64 = 600;

/// What a set of entries needs named.
#[derive(Default)]
pub struct Wanted {
    pub types: BTreeSet<i64>,
    pub users: BTreeSet<i64>,
    /// Stage lists as `DYNAMIC_{type}_STAGE_{category}`.
    pub stage_lists: BTreeSet<String>,
}

#[derive(Default, Debug)]
pub struct Names {
    types: HashMap<String, String>,
    users: HashMap<String, String>,
    /// Keyed by `{list}|{STATUS_ID}`.
    stages: HashMap<String, String>,
}

impl Names {
    pub fn type_title(&self, id: i64) -> Option<String> {
        self.types
            .get(&id.to_string())
            .filter(|n| !n.is_empty())
            .cloned()
    }

    pub fn user(&self, id: i64) -> Option<String> {
        self.users
            .get(&id.to_string())
            .filter(|n| !n.is_empty())
            .cloned()
    }

    pub fn stage(&self, list: &str, status_id: &str) -> Option<String> {
        self.stages
            .get(&format!("{list}|{status_id}"))
            .filter(|n| !n.is_empty())
            .cloned()
    }
}

pub fn stage_list(entity_type_id: i64, category_id: i64) -> String {
    format!("DYNAMIC_{entity_type_id}_STAGE_{category_id}")
}

/// Resolves `wanted` from the cache, asking the portal for what is missing.
pub async fn resolve(
    store: &Store,
    client: &PortalClient,
    portal: PortalId,
    wanted: &Wanted,
) -> anyhow::Result<Names> {
    let keys = |set: &BTreeSet<i64>| set.iter().map(i64::to_string).collect::<Vec<_>>();
    let lists: Vec<String> = wanted.stage_lists.iter().cloned().collect();
    let mut names = Names {
        types: store
            .cached_names(portal, "type", &keys(&wanted.types))
            .await?,
        users: store
            .cached_names(portal, "user", &keys(&wanted.users))
            .await?,
        stages: HashMap::new(),
    };
    let known_lists = store.cached_names(portal, "stage_list", &lists).await?;
    for list in known_lists.keys() {
        names
            .stages
            .extend(store.stages_of_list(portal, list).await?);
    }

    let mut commands = Vec::new();
    for id in wanted
        .types
        .iter()
        .filter(|id| !names.types.contains_key(&id.to_string()))
    {
        let cmd = batch_command(
            "crm.type.getByEntityTypeId",
            &[("entityTypeId", id.to_string())],
        );
        commands.push((format!("t{id}"), cmd));
    }
    for id in wanted
        .users
        .iter()
        .filter(|id| !names.users.contains_key(&id.to_string()))
    {
        commands.push((
            format!("u{id}"),
            batch_command("user.get", &[("ID", id.to_string())]),
        ));
    }
    for (n, list) in lists
        .iter()
        .filter(|l| !known_lists.contains_key(*l))
        .enumerate()
    {
        let cmd = batch_command("crm.status.list", &[("filter[ENTITY_ID]", list.clone())]);
        commands.push((format!("s{n}|{list}"), cmd));
    }
    if commands.is_empty() {
        return Ok(names);
    }

    for chunk in commands.chunks(50) {
        let answer = match client.batch(portal, chunk).await {
            Ok(answer) => answer,
            // Names are a courtesy: without them the log shows ids.
            Err(err) => {
                tracing::warn!("names could not be fetched: {err}");
                return Ok(names);
            }
        };
        let mut found: HashMap<&str, HashMap<String, String>> = HashMap::new();
        let mut missing: HashMap<&str, HashMap<String, String>> = HashMap::new();
        for (key, _) in chunk {
            let result = answer.results.get(key);
            let (kind, id) = key.split_at(1);
            match kind {
                "t" => {
                    let title = result
                        .and_then(|r| r["type"]["title"].as_str())
                        .map(str::to_owned);
                    file(&mut found, &mut missing, "type", id, title);
                }
                "u" => {
                    let user = result
                        .and_then(|r| r.as_array())
                        .and_then(|list| list.first())
                        .and_then(person);
                    file(&mut found, &mut missing, "user", id, user);
                }
                _ => {
                    let list = id.split_once('|').map(|(_, l)| l).unwrap_or_default();
                    let Some(stages) = result.and_then(Value::as_array) else {
                        continue;
                    };
                    let entries = found.entry("stage").or_default();
                    for stage in stages {
                        if let (Some(status), Some(name)) =
                            (stage["STATUS_ID"].as_str(), stage["NAME"].as_str())
                        {
                            entries.insert(format!("{list}|{status}"), name.to_owned());
                        }
                    }
                    found
                        .entry("stage_list")
                        .or_default()
                        .insert(list.to_owned(), "fetched".to_owned());
                }
            }
        }
        for (kind, entries) in &found {
            store
                .cache_names(portal, kind, entries, NAME_TTL_SECS)
                .await?;
        }
        for (kind, entries) in &missing {
            store
                .cache_names(portal, kind, entries, MISSING_TTL_SECS)
                .await?;
        }
        for (kind, entries) in found.into_iter().chain(missing) {
            match kind {
                "type" => names.types.extend(entries),
                "user" => names.users.extend(entries),
                "stage" => names.stages.extend(entries),
                _ => {}
            }
        }
    }
    Ok(names)
}

fn file<'a>(
    found: &mut HashMap<&'a str, HashMap<String, String>>,
    missing: &mut HashMap<&'a str, HashMap<String, String>>,
    kind: &'a str,
    id: &str,
    name: Option<String>,
) {
    match name.filter(|n| !n.trim().is_empty()) {
        Some(name) => found.entry(kind).or_default().insert(id.to_owned(), name),
        None => missing
            .entry(kind)
            .or_default()
            .insert(id.to_owned(), String::new()),
    };
}

/// `Ivan Petrov` from a `user.get` record.
fn person(user: &Value) -> Option<String> {
    let part = |key: &str| user[key].as_str().unwrap_or_default().trim().to_owned();
    let name = format!("{} {}", part("NAME"), part("LAST_NAME"))
        .trim()
        .to_owned();
    if name.is_empty() {
        user["LOGIN"].as_str().map(str::to_owned)
    } else {
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn people_are_named_by_first_and_last_name() {
        assert_eq!(
            person(&json!({"ID": "1", "NAME": "Ivan", "LAST_NAME": "Petrov"})).as_deref(),
            Some("Ivan Petrov")
        );
        assert_eq!(
            person(&json!({"ID": "2", "NAME": "", "LAST_NAME": "", "LOGIN": "bot"})).as_deref(),
            Some("bot")
        );
        assert_eq!(person(&json!({"ID": "3"})), None);
    }

    #[test]
    fn unresolved_names_read_as_absent() {
        let mut names = Names::default();
        names.users.insert("5".into(), String::new());
        names.types.insert("1220".into(), "Orders".into());
        assert_eq!(names.user(5), None);
        assert_eq!(names.type_title(1220).as_deref(), Some("Orders"));
        assert_eq!(stage_list(1220, 30), "DYNAMIC_1220_STAGE_30");
    }
}
