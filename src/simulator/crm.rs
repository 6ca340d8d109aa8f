//! The portal's in-memory CRM: smart-process types, their stages and items, and users, with the
//! read methods the app uses (`crm.item.*`, `crm.type.*`, `crm.status.list`, `user.get`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{anyhow, bail};
use serde_json::{Map, Value, json};

use super::Changer;
use super::rest::{Answer, RestError};
use super::wire::{Param, portal_time};

#[derive(Default)]
pub(crate) struct Crm {
    types: Vec<SmartType>,
    users: BTreeMap<u64, User>,
    stages: Vec<Stage>,
    /// Items by (entityTypeId, id); fields as `crm.item.get` returns them.
    items: BTreeMap<(u64, u64), Map<String, Value>>,
    /// Ids are never reused, even after a delete.
    last_item_id: BTreeMap<u64, u64>,
}

struct SmartType {
    id: u64,
    entity_type_id: u64,
    title: String,
}

struct User {
    name: String,
    last_name: String,
}

struct Stage {
    id: u64,
    entity_type_id: u64,
    category_id: u64,
    status_id: String,
    name: String,
    sort: u64,
}

/// Fields the store owns; a change cannot set them.
const OWN_FIELDS: [&str; 4] = ["id", "entityTypeId", "createdBy", "createdTime"];

impl Crm {
    pub fn add_type(&mut self, entity_type_id: u64, title: &str) {
        self.types.retain(|t| t.entity_type_id != entity_type_id);
        let id = self.types.iter().map(|t| t.id).max().unwrap_or(0) + 1;
        self.types.push(SmartType {
            id,
            entity_type_id,
            title: title.to_string(),
        });
    }

    pub fn add_user(&mut self, user_id: u64, name: &str, last_name: &str) {
        let user = User {
            name: name.to_string(),
            last_name: last_name.to_string(),
        };
        self.users.insert(user_id, user);
    }

    pub fn add_stage(
        &mut self,
        entity_type_id: u64,
        category_id: u64,
        status_id: &str,
        name: &str,
    ) {
        let sort = 10
            * (1 + self
                .stages
                .iter()
                .filter(|s| s.entity_type_id == entity_type_id && s.category_id == category_id)
                .count() as u64);
        self.stages.push(Stage {
            id: self.stages.len() as u64 + 1,
            entity_type_id,
            category_id,
            status_id: status_id.to_string(),
            name: name.to_string(),
            sort,
        });
    }

    pub fn type_title(&self, entity_type_id: u64) -> Option<&str> {
        self.types
            .iter()
            .find(|t| t.entity_type_id == entity_type_id)
            .map(|t| t.title.as_str())
    }

    pub fn item(&self, entity_type_id: u64, id: u64) -> Option<&Map<String, Value>> {
        self.items.get(&(entity_type_id, id))
    }

    pub fn create(
        &mut self,
        entity_type_id: u64,
        fields: &Value,
        by: Changer,
    ) -> anyhow::Result<u64> {
        let given = as_fields(fields)?;
        let id = self.last_item_id.get(&entity_type_id).copied().unwrap_or(0) + 1;
        self.last_item_id.insert(entity_type_id, id);

        // Category: given, else read from a given stage, else the type's first stage.
        let category_id = given
            .get("categoryId")
            .and_then(Value::as_u64)
            .or_else(|| {
                given
                    .get("stageId")
                    .and_then(Value::as_str)
                    .and_then(category_of)
            })
            .or_else(|| {
                self.first_stage(entity_type_id, None)
                    .map(|s| s.category_id)
            })
            .unwrap_or(0);
        let stage_id = self
            .first_stage(entity_type_id, Some(category_id))
            .map(|s| s.status_id.clone())
            .unwrap_or_else(|| format!("DT{entity_type_id}_{category_id}:NEW"));
        let assigned = match by {
            Changer::User(user) => user,
            Changer::Robot => 1,
        };
        let title = format!(
            "{} #{id}",
            self.type_title(entity_type_id).unwrap_or("Item")
        );
        let now = portal_time(SystemTime::now());

        let mut item = Map::new();
        item.insert("id".into(), json!(id));
        item.insert("entityTypeId".into(), json!(entity_type_id));
        item.insert("title".into(), json!(title));
        item.insert("categoryId".into(), json!(category_id));
        item.insert("stageId".into(), json!(stage_id));
        item.insert("assignedById".into(), json!(assigned));
        item.insert("opportunity".into(), json!(0));
        item.insert("currencyId".into(), json!("USD"));
        for (key, value) in given {
            if !OWN_FIELDS.contains(&key.as_str()) {
                item.insert(key.clone(), value.clone());
            }
        }
        let author = changer_id(by, &item);
        item.insert("createdBy".into(), json!(author));
        item.insert("createdTime".into(), json!(now));
        item.insert("updatedBy".into(), json!(author));
        item.insert("updatedTime".into(), json!(now));
        item.insert("movedBy".into(), json!(author));
        item.insert("movedTime".into(), json!(now));

        self.items.insert((entity_type_id, id), item);
        Ok(id)
    }

    pub fn update(
        &mut self,
        entity_type_id: u64,
        id: u64,
        changes: &Value,
        by: Changer,
    ) -> anyhow::Result<()> {
        let changes = as_fields(changes)?;
        let item = self
            .items
            .get_mut(&(entity_type_id, id))
            .ok_or_else(|| anyhow!("no item {id} of type {entity_type_id}"))?;
        let old_stage = item.get("stageId").cloned();

        for (key, value) in changes {
            if !OWN_FIELDS.contains(&key.as_str()) {
                item.insert(key.clone(), value.clone());
            }
        }

        let author = changer_id(by, item);
        let now = portal_time(SystemTime::now());
        item.insert("updatedBy".into(), json!(author));
        item.insert("updatedTime".into(), json!(now));
        if item.get("stageId") != old_stage.as_ref() {
            item.insert("movedBy".into(), json!(author));
            item.insert("movedTime".into(), json!(now));
        }
        Ok(())
    }

    pub fn delete(&mut self, entity_type_id: u64, id: u64) -> anyhow::Result<()> {
        if self.items.remove(&(entity_type_id, id)).is_none() {
            bail!("no item {id} of type {entity_type_id}");
        }
        Ok(())
    }

    /// Runs `method` if it is one of ours.
    pub fn call(&self, method: &str, params: &Param) -> Option<Result<Answer, RestError>> {
        let answer = match method {
            "crm.item.get" => self.get_item(params),
            "crm.item.list" => Ok(self.list_items(params)),
            "crm.type.getbyentitytypeid" => self.get_type(params),
            "crm.type.list" => Ok(self.list_types(params)),
            "crm.status.list" => Ok(self.list_stages(params)),
            "user.get" => Ok(self.list_users(params)),
            _ => return None,
        };
        Some(answer)
    }

    fn get_item(&self, params: &Param) -> Result<Answer, RestError> {
        let entity_type_id = params.u64("entityTypeId").unwrap_or(0);
        let id = params.u64("id").unwrap_or(0);

        let item = self
            .item(entity_type_id, id)
            .ok_or(RestError::bad("NOT_FOUND", "Element not found"))?;
        Ok(Answer::of(json!({ "item": item })))
    }

    fn list_items(&self, params: &Param) -> Answer {
        let entity_type_id = params.u64("entityTypeId").unwrap_or(0);
        let items = self
            .items
            .range((entity_type_id, 0)..=(entity_type_id, u64::MAX))
            .map(|(_, item)| Value::Object(item.clone()))
            .collect();
        Answer::page(items, params, |page| json!({ "items": page }))
    }

    fn get_type(&self, params: &Param) -> Result<Answer, RestError> {
        let entity_type_id = params.u64("entityTypeId").unwrap_or(0);

        let found = self
            .types
            .iter()
            .find(|t| t.entity_type_id == entity_type_id)
            .ok_or(RestError::bad("NOT_FOUND", "Smart process not found"))?;
        Ok(Answer::of(json!({ "type": type_json(found) })))
    }

    fn list_types(&self, params: &Param) -> Answer {
        let types = self.types.iter().map(type_json).collect();
        Answer::page(types, params, |page| json!({ "types": page }))
    }

    fn list_stages(&self, params: &Param) -> Answer {
        let wanted = params.get("filter").and_then(|f| f.text("ENTITY_ID"));
        let stages = self
            .stages
            .iter()
            .filter(|s| wanted.is_none_or(|w| stage_entity(s) == w))
            .map(|s| {
                json!({
                    "ID": s.id.to_string(),
                    "ENTITY_ID": stage_entity(s),
                    "STATUS_ID": s.status_id,
                    "NAME": s.name,
                    "NAME_INIT": "",
                    "SORT": s.sort.to_string(),
                    "SYSTEM": "N",
                    "CATEGORY_ID": s.category_id.to_string(),
                })
            })
            .collect();
        Answer::page(stages, params, Value::Array)
    }

    /// `user.current`: the token's own user; one never added is still someone, unnamed.
    pub fn current_user(&self, user_id: u64) -> Value {
        let (name, last_name) = self
            .users
            .get(&user_id)
            .map(|u| (u.name.clone(), u.last_name.clone()))
            .unwrap_or_default();
        json!({"ID": user_id.to_string(), "NAME": name, "LAST_NAME": last_name, "TIME_ZONE": ""})
    }

    /// `user.get` takes `ID` or `filter[ID]`, each one id or a list. Unknown ids (bots, system
    /// users) are simply missing from the answer.
    fn list_users(&self, params: &Param) -> Answer {
        let filter = params.get("filter");
        let ids = params
            .get("ID")
            .or_else(|| filter.and_then(|f| f.get("ID")));
        let wanted: Option<Vec<u64>> = ids.map(|p| {
            p.scalars()
                .iter()
                .filter_map(|s| s.trim().parse().ok())
                .collect()
        });

        let users = self
            .users
            .iter()
            .filter(|(id, _)| wanted.as_ref().is_none_or(|w| w.contains(id)))
            .map(|(id, u)| {
                json!({
                    "ID": id.to_string(),
                    "ACTIVE": true,
                    "NAME": u.name,
                    "LAST_NAME": u.last_name,
                })
            })
            .collect();
        Answer::page(users, params, Value::Array)
    }

    fn first_stage(&self, entity_type_id: u64, category_id: Option<u64>) -> Option<&Stage> {
        self.stages.iter().find(|s| {
            s.entity_type_id == entity_type_id && category_id.is_none_or(|c| s.category_id == c)
        })
    }
}

fn as_fields(value: &Value) -> anyhow::Result<&Map<String, Value>> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match value {
        Value::Object(fields) => Ok(fields),
        Value::Null => Ok(EMPTY.get_or_init(Map::new)),
        other => bail!("item fields must be a JSON object, not {other}"),
    }
}

/// The user recorded for a change. Robots act on behalf of the item's responsible user here;
/// the real platform's choice depends on how the workflow was started.
fn changer_id(by: Changer, item: &Map<String, Value>) -> u64 {
    match by {
        Changer::User(user) => user,
        Changer::Robot => item
            .get("assignedById")
            .and_then(Value::as_u64)
            .unwrap_or(1),
    }
}

/// `DT1220_30:NEW` → 30.
fn category_of(stage_id: &str) -> Option<u64> {
    let (prefix, _) = stage_id.split_once(':')?;
    prefix.rsplit_once('_')?.1.parse().ok()
}

fn stage_entity(stage: &Stage) -> String {
    format!(
        "DYNAMIC_{}_STAGE_{}",
        stage.entity_type_id, stage.category_id
    )
}

fn type_json(t: &SmartType) -> Value {
    json!({
        "id": t.id,
        "entityTypeId": t.entity_type_id,
        "title": t.title,
        "code": "",
        "isCategoriesEnabled": "Y",
        "isStagesEnabled": "Y",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_items_get_defaults_and_keep_custom_fields() {
        let mut crm = Crm::default();
        crm.add_type(1220, "Projects");
        crm.add_stage(1220, 30, "DT1220_30:NEW", "New");

        let fields = json!({"title": "Roof", "ufCrm5Color": "red", "id": 99});
        let id = crm.create(1220, &fields, Changer::User(7)).unwrap();
        let item = crm.item(1220, id).unwrap();

        assert_eq!(id, 1);
        assert_eq!(item["title"], "Roof");
        assert_eq!(item["ufCrm5Color"], "red");
        assert_eq!(item["stageId"], "DT1220_30:NEW");
        assert_eq!(item["categoryId"], 30);
        assert_eq!(item["createdBy"], 7);
    }

    #[test]
    fn a_robot_change_is_recorded_for_the_responsible_user() {
        let mut crm = Crm::default();
        let id = crm
            .create(1220, &json!({"assignedById": 5}), Changer::User(1))
            .unwrap();

        crm.update(
            1220,
            id,
            &json!({"stageId": "DT1220_0:WON"}),
            Changer::Robot,
        )
        .unwrap();
        let item = crm.item(1220, id).unwrap();

        assert_eq!(item["updatedBy"], 5);
        assert_eq!(item["movedBy"], 5);
        assert_eq!(item["createdBy"], 1);
    }

    #[test]
    fn user_get_takes_one_id_or_a_list() {
        let mut crm = Crm::default();
        crm.add_user(1, "Ann", "Lee");
        crm.add_user(2, "Bob", "Ray");
        crm.add_user(3, "Cy", "Ng");

        let one = crm.list_users(&super::super::wire::parse_query("ID=2"));
        let some = crm.list_users(&super::super::wire::parse_query(
            "filter[ID][]=1&filter[ID][]=3",
        ));

        assert_eq!(
            one.result,
            json!([{"ID": "2", "ACTIVE": true, "NAME": "Bob", "LAST_NAME": "Ray"}])
        );
        assert_eq!(some.total, Some(2));
    }
}
