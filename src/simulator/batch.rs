//! The `batch` method: up to 50 `"method?query"` commands run with the batch's auth, each
//! result or error filed under its key, shaped the way PHP serializes it.

use std::time::SystemTime;

use serde_json::json;

use super::rest::{Answer, RestError, call_method, method_name, take_fault};
use super::wire::{Param, parse_query, php_array, time_block};
use super::{SimulatorConfig, World};

/// The platform refuses longer batches outright.
pub(crate) const MAX_COMMANDS: usize = 50;

/// One parsed command: `crm.item.get?entityTypeId=1220&id=24`.
#[derive(Debug)]
pub(crate) struct Command {
    pub method: String,
    pub params: Param,
}

pub(crate) fn parse_command(text: &str) -> Command {
    let (method, query) = text.split_once('?').unwrap_or((text, ""));
    Command {
        method: method_name(method),
        params: parse_query(query),
    }
}

/// Runs a batch whose own request already passed auth and the rate limit.
pub(crate) fn run(
    world: &mut World,
    portal: usize,
    params: &Param,
    config: &SimulatorConfig,
) -> Result<Answer, RestError> {
    let halt = params
        .filled("halt")
        .is_some_and(|h| matches!(h, "1" | "true" | "Y" | "y"));
    let commands: Vec<(String, Command)> = params
        .get("cmd")
        .map(Param::entries)
        .unwrap_or_default()
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), parse_command(value.as_text()?))))
        .collect();
    if commands.len() > MAX_COMMANDS {
        return Err(RestError::bad(
            "ERROR_BATCH_LENGTH_EXCEEDED",
            &format!("Max batch length exceeded ({MAX_COMMANDS})"),
        ));
    }

    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut totals = Vec::new();
    let mut nexts = Vec::new();
    let mut times = Vec::new();

    for (key, command) in commands {
        let started = SystemTime::now();
        let state = &mut world.portals[portal];
        *state
            .stats
            .sub_calls
            .entry(command.method.clone())
            .or_default() += 1;

        let outcome = if command.method == "batch" {
            Err(RestError::bad(
                "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "Method is not allowed for batch usage",
            ))
        } else if let Some(fault) = take_fault(state, &command.method) {
            Err(fault)
        } else {
            call_method(world, portal, &command.method, &command.params, config)
        };

        match outcome {
            Ok(answer) => {
                results.push((key.clone(), answer.result));
                if let Some(total) = answer.total {
                    totals.push((key.clone(), json!(total)));
                }
                if let Some(next) = answer.next {
                    nexts.push((key.clone(), json!(next)));
                }
                times.push((key, time_block(started)));
            }
            Err(e) => {
                errors.push((key, e.body()));
                if halt {
                    break;
                }
            }
        }
    }

    Ok(Answer::of(json!({
        "result": php_array(results),
        "result_error": php_array(errors),
        "result_total": php_array(totals),
        "result_next": php_array(nexts),
        "result_time": php_array(times),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_into_method_and_php_style_params() {
        let c = parse_command("crm.item.get?entityTypeId=1220&id=24");
        assert_eq!(c.method, "crm.item.get");
        assert_eq!(c.params.u64("entityTypeId"), Some(1220));
        assert_eq!(c.params.u64("id"), Some(24));

        let c = parse_command("user.get?filter%5BID%5D%5B0%5D=1&filter[ID][1]=5");
        let ids = c
            .params
            .get("filter")
            .and_then(|f| f.get("ID"))
            .map(Param::scalars);
        assert_eq!(ids, Some(vec!["1", "5"]));

        let c = parse_command("Event.Get");
        assert_eq!(c.method, "event.get");
        assert_eq!(c.params, Param::empty());
    }

    #[test]
    fn commands_keep_their_sending_order() {
        let p = parse_query("cmd[z]=app.info&cmd[a]=event.get&cmd[m]=user.get");
        let keys: Vec<_> = p
            .get("cmd")
            .unwrap()
            .entries()
            .iter()
            .map(|e| e.0.as_str())
            .collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }
}
