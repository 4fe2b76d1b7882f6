//! Tool definitions, calls and choices in the shapes both wire APIs use: Ollama's and OpenAI's
//! `tools` are the same objects; calls differ (Ollama: arguments as an object; OpenAI: as a
//! JSON string, with an id the `tool` message answers by).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use super::error::ApiError;
use crate::engine::tools::MAX_TOOLS;
use crate::engine::{ChatMessage, Tool, ToolCall, ToolChoice, ToolUse};

/// `[{"type": "function", "function": {"name", "description", "parameters"}}]`. An empty list
/// is no tools.
pub fn parse_tools(tools: &[Value]) -> Result<Vec<Tool>, ApiError> {
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_TOOLS} tools per request"
        )));
    }
    tools
        .iter()
        .map(|t| {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
            if kind != "function" {
                return Err(ApiError::bad_request(format!(
                    "unsupported tool type {kind:?}: only \"function\" tools"
                )));
            }
            let f = t
                .get("function")
                .filter(|f| f.is_object())
                .ok_or_else(|| ApiError::bad_request("a tool needs a \"function\" object"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("a tool's function needs a \"name\""))?;
            let parameters = match f.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(p) => p.clone(),
            };
            Ok(Tool {
                name: name.to_owned(),
                description: f
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                parameters,
            })
        })
        .collect()
}

/// OpenAI's `tool_choice`: `"auto"` (default), `"none"` (→ `None`: tools are not offered),
/// `"required"`, or `{"type": "function", "function": {"name"}}`.
pub fn parse_choice(choice: Option<&Value>) -> Result<Option<ToolChoice>, ApiError> {
    match choice {
        None | Some(Value::Null) => Ok(Some(ToolChoice::Auto)),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(None),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(ApiError::bad_request(format!(
                "invalid tool_choice {other:?}: use \"auto\", \"none\", \"required\" or a function"
            ))),
        },
        Some(v) => v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|n| Some(ToolChoice::Function(n.to_owned())))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid tool_choice: expected {\"type\": \"function\", \"function\": {\"name\": …}}",
                )
            }),
    }
}

/// The request's tools, or `None` when there are none (or the choice is `none`). Checked here
/// so that a bad definition is a 400 naming it.
pub fn tool_use(
    tools: Vec<Tool>,
    choice: Option<ToolChoice>,
    parallel: bool,
) -> Result<Option<ToolUse>, ApiError> {
    let Some(choice) = choice.filter(|_| !tools.is_empty()) else {
        return Ok(None);
    };
    let u = ToolUse {
        tools,
        choice,
        parallel,
    };
    u.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Some(u))
}

/// Arguments of an earlier call: an object, or (OpenAI, and some Ollama clients) a JSON string
/// holding one.
pub fn call_arguments(v: Option<&Value>) -> Result<Value, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(_)) => Ok(v.cloned().unwrap_or_default()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(obj @ Value::Object(_)) => Ok(obj),
            _ => Err(ApiError::bad_request(
                "tool call arguments must be a JSON object",
            )),
        },
        Some(_) => Err(ApiError::bad_request(
            "tool call arguments must be a JSON object",
        )),
    }
}

/// The calls earlier turns made, by id: a `tool` turn that gives only a `tool_call_id` (OpenAI,
/// Open WebUI) is the answer of the function that call named.
#[derive(Debug, Default)]
pub struct EarlierCalls(Vec<(String, String)>);

impl EarlierCalls {
    /// Parses a turn's calls into it, remembering their ids.
    pub fn add(&mut self, turn: &mut ChatMessage, calls: &[Value]) -> Result<(), ApiError> {
        for c in calls {
            let (id, call) = parse_call(c)?;
            if let Some(id) = id {
                self.0.push((id, call.name.clone()));
            }
            turn.tool_calls.push(call);
        }
        Ok(())
    }

    /// The function the call `id` named.
    pub fn name(&self, id: &str) -> Option<String> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, n)| n.clone())
    }
}

/// An earlier call as a message carries it: `{"id"?, "function": {"name", "arguments"}}`.
fn parse_call(v: &Value) -> Result<(Option<String>, ToolCall), ApiError> {
    let f = v
        .get("function")
        .ok_or_else(|| ApiError::bad_request("a tool call needs a \"function\" object"))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("a tool call's function needs a \"name\""))?;
    Ok((
        v.get("id").and_then(Value::as_str).map(str::to_owned),
        ToolCall {
            name: name.to_owned(),
            arguments: call_arguments(f.get("arguments"))?,
        },
    ))
}

static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// A fresh call id (unique within this process, as clients only match ids within a
/// conversation).
pub fn call_id() -> String {
    format!("call_{:08x}", NEXT_CALL.fetch_add(1, Ordering::Relaxed))
}

/// Calls in Ollama's shape: arguments as an object.
pub fn ollama_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": call_id(), "function": {"index": i, "name": c.name,
                                                 "arguments": c.arguments}})
        })
        .collect()
}

/// Calls in OpenAI's shape: arguments as a JSON string; `index` in stream chunks.
pub fn openai_calls(calls: &[ToolCall], chunk: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = json!({"id": call_id(), "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments.to_string()}});
            if chunk {
                v["index"] = json!(i);
            }
            v
        })
        .collect()
}
