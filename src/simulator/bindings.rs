//! Event bindings and placements of the app on one portal, and the REST methods that manage
//! them (`event.*`, `placement.*`).

use serde_json::{Value, json};

use super::rest::{Answer, RestError};
use super::wire::Param;
use super::{Binding, PlacementBinding};

/// The events this simulated portal knows. The real platform knows hundreds, but these are the
/// ones the app's scopes allow and the simulator can fire.
pub(crate) const KNOWN_EVENTS: [&str; 5] = [
    "ONCRMDYNAMICITEMADD",
    "ONCRMDYNAMICITEMUPDATE",
    "ONCRMDYNAMICITEMDELETE",
    "ONAPPINSTALL",
    "ONAPPUNINSTALL",
];

#[derive(Default)]
pub(crate) struct Hooks {
    events: Vec<EventBinding>,
    placements: Vec<Placement>,
    last_id: u64,
}

struct EventBinding {
    id: u64,
    event: String,
    handler: String,
    auth_type: u64,
    offline: bool,
}

struct Placement {
    placement: String,
    handler: String,
    title: String,
    description: String,
}

/// One online handler to call for an event.
pub(crate) struct Target {
    pub handler_id: u64,
    pub handler: String,
    /// The user whose token the handler gets; 0 means the user who caused the event.
    pub auth_type: u64,
}

impl Hooks {
    pub fn bindings(&self) -> Vec<Binding> {
        self.events
            .iter()
            .map(|b| Binding {
                event: b.event.clone(),
                handler: b.handler.clone(),
                auth_type: b.auth_type,
                offline: b.offline,
            })
            .collect()
    }

    pub fn placements(&self) -> Vec<PlacementBinding> {
        self.placements
            .iter()
            .map(|p| PlacementBinding {
                placement: p.placement.clone(),
                handler: p.handler.clone(),
                title: p.title.clone(),
            })
            .collect()
    }

    /// Online handlers of `event`, in binding order. Offline bindings only feed the offline
    /// queue, which this simulator does not keep.
    pub fn targets(&self, event: &str) -> Vec<Target> {
        self.events
            .iter()
            .filter(|b| !b.offline && b.event.eq_ignore_ascii_case(event))
            .map(|b| Target {
                handler_id: b.id,
                handler: b.handler.clone(),
                auth_type: b.auth_type,
            })
            .collect()
    }

    /// What uninstalling does to bindings and placements.
    pub fn clear(&mut self) {
        self.events.clear();
        self.placements.clear();
    }

    /// Runs `method` if it is one of ours.
    pub fn call(&mut self, method: &str, params: &Param) -> Option<Result<Answer, RestError>> {
        let answer = match method {
            "event.bind" => self.bind_event(params),
            "event.get" => Ok(self.list_events()),
            "event.unbind" => self.unbind_event(params),
            "placement.bind" => self.bind_placement(params),
            "placement.get" => Ok(self.list_placements()),
            "placement.unbind" => self.unbind_placement(params),
            _ => return None,
        };
        Some(answer)
    }

    fn bind_event(&mut self, params: &Param) -> Result<Answer, RestError> {
        let event = params
            .filled("event")
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !KNOWN_EVENTS.contains(&event.as_str()) {
            return Err(RestError::bad("ERROR_EVENT_NOT_FOUND", "Event not found"));
        }
        let offline = params
            .filled("event_type")
            .is_some_and(|t| t.eq_ignore_ascii_case("offline"));
        let handler = params.filled("handler").unwrap_or_default().to_string();
        if !offline && !is_web_url(&handler) {
            return Err(RestError::argument("handler"));
        }
        let auth_type = params.u64("auth_type").unwrap_or(0);

        let taken = self
            .events
            .iter()
            .any(|b| b.event == event && b.handler == handler && b.offline == offline);
        if taken {
            return Err(RestError::bad("ERROR_CORE", "Handler already binded"));
        }

        self.last_id += 1;
        self.events.push(EventBinding {
            id: self.last_id,
            event,
            handler,
            auth_type,
            offline,
        });
        Ok(Answer::of(json!(true)))
    }

    fn list_events(&self) -> Answer {
        // The platform sends auth_type as a string and offline as a number.
        let list: Vec<Value> = self
            .events
            .iter()
            .map(|b| {
                json!({
                    "event": b.event,
                    "handler": b.handler,
                    "auth_type": b.auth_type.to_string(),
                    "offline": u8::from(b.offline),
                })
            })
            .collect();
        Answer::of(Value::Array(list))
    }

    fn unbind_event(&mut self, params: &Param) -> Result<Answer, RestError> {
        let event = params
            .filled("event")
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !KNOWN_EVENTS.contains(&event.as_str()) {
            return Err(RestError::bad("ERROR_EVENT_NOT_FOUND", "Event not found"));
        }
        let handler = params.filled("handler").unwrap_or_default().to_string();

        let before = self.events.len();
        self.events
            .retain(|b| !(b.event == event && (handler.is_empty() || b.handler == handler)));
        Ok(Answer::of(json!({ "count": before - self.events.len() })))
    }

    fn bind_placement(&mut self, params: &Param) -> Result<Answer, RestError> {
        let placement = params
            .filled("PLACEMENT")
            .ok_or(RestError::argument("PLACEMENT"))?;
        let placement = placement.to_ascii_uppercase();
        if !is_placement_code(&placement) {
            return Err(RestError::bad(
                "ERROR_PLACEMENT_NOT_FOUND",
                "Placement not found",
            ));
        }
        let handler = params.filled("HANDLER").unwrap_or_default().to_string();
        if !is_web_url(&handler) {
            return Err(RestError::argument("HANDLER"));
        }

        let taken = self
            .placements
            .iter()
            .any(|p| p.placement == placement && p.handler == handler);
        if taken {
            return Err(RestError::bad(
                "ERROR_CORE",
                "Unable to set placement handler: Handler already binded",
            ));
        }

        self.placements.push(Placement {
            placement,
            handler,
            title: params.text("TITLE").unwrap_or_default().to_string(),
            description: params.text("DESCRIPTION").unwrap_or_default().to_string(),
        });
        Ok(Answer::of(json!(true)))
    }

    fn list_placements(&self) -> Answer {
        let list: Vec<Value> = self
            .placements
            .iter()
            .map(|p| {
                json!({
                    "placement": p.placement,
                    "handler": p.handler,
                    "title": p.title,
                    "description": p.description,
                    "options": [],
                })
            })
            .collect();
        Answer::of(Value::Array(list))
    }

    fn unbind_placement(&mut self, params: &Param) -> Result<Answer, RestError> {
        let placement = params
            .filled("PLACEMENT")
            .ok_or(RestError::argument("PLACEMENT"))?;
        let placement = placement.to_ascii_uppercase();
        let handler = params.filled("HANDLER").unwrap_or_default().to_string();

        let before = self.placements.len();
        self.placements.retain(|p| {
            !(p.placement == placement && (handler.is_empty() || p.handler == handler))
        });
        Ok(Answer::of(
            json!({ "count": before - self.placements.len() }),
        ))
    }
}

fn is_web_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// Placement codes are upper-case identifiers; `DEFAULT` is the main page and cannot be bound.
fn is_placement_code(s: &str) -> bool {
    s != "DEFAULT"
        && !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}
