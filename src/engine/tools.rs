//! Tool calling: how a template lays out tool definitions, calls and results, the grammar that
//! makes every call name a known function with arguments valid for its JSON Schema, and the
//! parser that turns the constrained output back into calls.
//!
//! Two syntaxes, one per template family:
//! - **Tagged** (ChatML models, whose templates define none of their own): the widely used
//!   Hermes/Qwen layout — tools listed in the system turn inside `<tools></tools>`, each call
//!   written as `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, several calls in a
//!   row allowed, results sent back in a user turn inside `<tool_response></tool_response>`.
//! - **Llama 3 JSON** (Llama 3.1/3.2's own format, as Ollama's llama3.2 template renders it):
//!   the functions listed in the last user turn, the answer is one JSON object
//!   `{"name": …, "parameters": {…}}`, results come back in an `ipython` turn.
//!
//! With `auto` the grammar lets the model choose between plain text and calls; text can never
//! contain the start of a call that is not a valid call.

use serde_json::{json, Map, Value};

use super::EngineError;

/// Most calls one answer may make (a small model otherwise repeats a call until `num_predict`).
pub const MAX_PARALLEL_CALLS: usize = 4;
/// Most tools one request may define.
pub const MAX_TOOLS: usize = 128;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// A call the model made (or made earlier in the conversation).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
}

/// Whether the model must call a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Text or calls, as the model decides.
    Auto,
    /// At least one call, to any of the tools.
    Required,
    /// A call to this function.
    Function(String),
}

/// The tools of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUse {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// More than one call in one answer (where the syntax allows it).
    pub parallel: bool,
}

impl ToolUse {
    /// Checks what the grammar relies on: at least one tool, unique plain names, object
    /// schemas, and a named choice that exists.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::InvalidInput(m));
        if self.tools.is_empty() {
            return bad("tools is empty".into());
        }
        if self.tools.len() > MAX_TOOLS {
            return bad(format!("at most {MAX_TOOLS} tools per request"));
        }
        for (i, t) in self.tools.iter().enumerate() {
            let plain = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
            if t.name.is_empty() || t.name.len() > 64 || !t.name.chars().all(plain) {
                return bad(format!(
                    "tool name {:?}: use 1 to 64 letters, digits, '_', '-', '.' or ':'",
                    t.name
                ));
            }
            if self.tools[..i].iter().any(|o| o.name == t.name) {
                return bad(format!("tool {:?} is defined twice", t.name));
            }
            if !t.parameters.is_object() {
                return bad(format!(
                    "the parameters of tool {:?} must be a JSON Schema object",
                    t.name
                ));
            }
            if let Some(ty) = t.parameters.get("type") {
                if ty != "object" {
                    return bad(format!(
                        "the parameters of tool {:?} must describe an object (\"type\": \"object\")",
                        t.name
                    ));
                }
            }
        }
        if let ToolChoice::Function(name) = &self.choice {
            if !self.tools.iter().any(|t| &t.name == name) {
                return bad(format!(
                    "tool_choice names {name:?}, which is not among the tools"
                ));
            }
        }
        Ok(())
    }

    /// The tools a call may name.
    fn callable(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter().filter(move |t| match &self.choice {
            ToolChoice::Function(n) => &t.name == n,
            _ => true,
        })
    }
}

/// How a template writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSyntax {
    /// `<tool_call>\n{"name", "arguments"}\n</tool_call>`, repeatable.
    Tagged,
    /// One `{"name", "parameters"}` object as the whole answer.
    Llama3Json,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

impl ToolSyntax {
    fn arguments_key(self) -> &'static str {
        match self {
            ToolSyntax::Tagged => "arguments",
            ToolSyntax::Llama3Json => "parameters",
        }
    }

    /// A call as this syntax writes it (for earlier calls in the conversation).
    pub fn write_call(self, call: &ToolCall) -> String {
        let mut obj = Map::new();
        obj.insert("name".into(), json!(call.name));
        obj.insert(self.arguments_key().into(), call.arguments.clone());
        let body = Value::Object(obj).to_string();
        match self {
            ToolSyntax::Tagged => format!("{OPEN}\n{body}\n{CLOSE}"),
            ToolSyntax::Llama3Json => body,
        }
    }

    /// The JSON Schema of one call: the name of a callable tool and its arguments.
    fn call_schema(self, tools: &ToolUse) -> Value {
        let options: Vec<Value> = tools
            .callable()
            .map(|t| {
                let mut props = Map::new();
                props.insert("name".into(), json!({"const": t.name}));
                props.insert(self.arguments_key().into(), t.parameters.clone());
                json!({"type": "object", "properties": props,
                       "required": ["name", self.arguments_key()]})
            })
            .collect();
        let mut schema = if options.len() == 1 {
            options.into_iter().next().unwrap_or_default()
        } else {
            json!({"anyOf": options})
        };
        super::constraint::close_objects(&mut schema);
        super::constraint::with_compact_whitespace(schema)
    }

    /// The Lark grammar (llguidance's dialect) of an answer: calls only, or (with `auto`) plain
    /// text or text followed by calls. With `text_schema` a text answer is JSON valid against
    /// it (a request's `format`), and calls start the answer.
    pub fn grammar(self, tools: &ToolUse, text_schema: Option<&Value>) -> String {
        let call = self.call_schema(tools);
        // A named function is one call, as OpenAI's tool_choice means it.
        let parallel = tools.parallel && !matches!(tools.choice, ToolChoice::Function(_));
        let more = if parallel {
            format!(" (\"\\n\" block){{0,{}}}", MAX_PARALLEL_CALLS - 1)
        } else {
            String::new()
        };
        let calls = match self {
            ToolSyntax::Tagged => format!("block{more}"),
            ToolSyntax::Llama3Json => "call".to_owned(),
        };
        let start = match (tools.choice == ToolChoice::Auto, text_schema, self) {
            (false, _, _) => format!("start: {calls}"),
            (true, Some(schema), _) => format!("start: answer | {calls}\nanswer: %json {schema}"),
            // TEXT cannot contain the opening tag; `lead` is text up to the first one.
            (true, None, ToolSyntax::Tagged) => format!(
                "start: TEXT | lead \"\\n\" body{more}\n\
                 TEXT: /(.|\\n)+/ & ~/(.|\\n)*<tool_call>(.|\\n)*/\n\
                 lead[lazy]: /(.|\\n)*<tool_call>/"
            ),
            (true, None, ToolSyntax::Llama3Json) => {
                "start: TEXT | call\nTEXT: /[^{](.|\\n)*/".to_owned()
            }
        };
        let tagged = match self {
            ToolSyntax::Tagged => {
                "block: \"<tool_call>\\n\" body\nbody: call \"\\n</tool_call>\"\n"
            }
            ToolSyntax::Llama3Json => "",
        };
        format!("{start}\n{tagged}call: %json {call}\n")
    }

    /// Splits a finished answer into its text and its calls. `Err` holds the text of a call
    /// that was cut short (by `num_predict` or the context); the caller returns it as text.
    pub fn parse(self, calls_text: &str) -> Result<Vec<ToolCall>, String> {
        let mut calls = Vec::new();
        let mut rest = calls_text;
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            if self == ToolSyntax::Tagged {
                // The splitter keeps everything after the first opening tag.
                rest = rest.strip_prefix(OPEN).unwrap_or(rest).trim_start();
            }
            let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
            let Some(Ok(value)) = values.next() else {
                return Err(calls_text.to_owned());
            };
            let used = values.byte_offset();
            // (With a `format`, a Llama 3 text answer is an object too: it has no name.)
            let call = match value {
                Value::Object(mut obj) => match (
                    obj.get("name").and_then(Value::as_str).map(str::to_owned),
                    obj.remove(self.arguments_key()),
                ) {
                    (Some(name), Some(arguments)) if arguments.is_object() => {
                        ToolCall { name, arguments }
                    }
                    _ => return Err(calls_text.to_owned()),
                },
                _ => return Err(calls_text.to_owned()),
            };
            calls.push(call);
            rest = &rest[used..];
            if self == ToolSyntax::Tagged {
                rest = match rest.trim_start().strip_prefix(CLOSE) {
                    Some(r) => r,
                    None => return Err(calls_text.to_owned()),
                };
            }
        }
        Ok(calls)
    }
}

/// Separates streamed text from call text as it arrives: text is passed on, except the tail
/// that could be the start of a call; everything from the first call on is kept for [`parse`].
///
/// [`parse`]: ToolSyntax::parse
pub struct CallSplitter {
    syntax: ToolSyntax,
    pending: String,
    calls: Option<String>,
    seen_text: bool,
}

impl CallSplitter {
    pub fn new(syntax: ToolSyntax) -> Self {
        Self {
            syntax,
            pending: String::new(),
            calls: None,
            seen_text: false,
        }
    }

    /// Adds generated text; returns the text that is final now.
    pub fn push(&mut self, text: &str) -> String {
        if let Some(calls) = &mut self.calls {
            calls.push_str(text);
            return String::new();
        }
        self.pending.push_str(text);
        match self.syntax {
            ToolSyntax::Llama3Json => {
                if self.seen_text || self.pending.is_empty() {
                    return std::mem::take(&mut self.pending);
                }
                // The grammar decides at the first character: `{` starts the call.
                if self.pending.starts_with('{') {
                    self.calls = Some(std::mem::take(&mut self.pending));
                    return String::new();
                }
                self.seen_text = true;
                std::mem::take(&mut self.pending)
            }
            ToolSyntax::Tagged => {
                if let Some(at) = self.pending.find(OPEN) {
                    let out = self.pending[..at].to_owned();
                    self.calls = Some(self.pending[at..].to_owned());
                    self.pending.clear();
                    return out;
                }
                let keep = (0..self.pending.len())
                    .filter(|&i| self.pending.is_char_boundary(i))
                    .find(|&i| OPEN.starts_with(&self.pending[i..]))
                    .unwrap_or(self.pending.len());
                let out = self.pending[..keep].to_owned();
                self.pending.drain(..keep);
                out
            }
        }
    }

    /// At the end: the text still held back, and the calls (or, when a call was cut short,
    /// its text appended to the text).
    pub fn finish(mut self) -> (String, Vec<ToolCall>) {
        let mut text = std::mem::take(&mut self.pending);
        let Some(calls) = self.calls else {
            return (text, Vec::new());
        };
        match self.syntax.parse(&calls) {
            Ok(mut parsed) => {
                // The same call twice in one answer is a small model repeating itself.
                let mut i = 0;
                while i < parsed.len() {
                    if parsed[..i].contains(&parsed[i]) {
                        parsed.remove(i);
                    } else {
                        i += 1;
                    }
                }
                (text, parsed)
            }
            Err(raw) => {
                text.push_str(&raw);
                (text, Vec::new())
            }
        }
    }
}

/// Tool definitions as the prompt lists them: one JSON object per line, OpenAI's shape (the
/// shape both template families were trained on).
pub fn tool_lines(tools: &[Tool]) -> String {
    tools
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ToolUse {
        ToolUse {
            tools: vec![Tool {
                name: "get_weather".into(),
                description: "Weather in a city".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]}),
            }],
            choice: ToolChoice::Auto,
            parallel: true,
        }
    }

    #[test]
    fn tagged_calls_are_split_from_text_while_streaming() {
        let mut s = CallSplitter::new(ToolSyntax::Tagged);
        assert_eq!(s.push("Let me check <"), "Let me check ");
        assert_eq!(s.push("tool"), "");
        assert_eq!(
            s.push("_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"a</tool_call>\"}}"),
            ""
        );
        assert_eq!(
            s.push("\n</tool_call>\n<tool_call>\n{\"name\":\"x\",\"arguments\":{}}\n</tool_call>"),
            ""
        );
        let (rest, calls) = s.finish();
        assert_eq!(rest, "");
        assert_eq!(
            calls,
            vec![
                ToolCall {
                    name: "get_weather".into(),
                    arguments: json!({"city": "a</tool_call>"})
                },
                ToolCall {
                    name: "x".into(),
                    arguments: json!({})
                }
            ]
        );
    }

    #[test]
    fn a_repeated_call_is_made_once() {
        let mut s = CallSplitter::new(ToolSyntax::Tagged);
        let call = "<tool_call>\n{\"name\":\"f\",\"arguments\":{\"a\":1}}\n</tool_call>";
        s.push(&format!("{call}\n{call}\n<tool_call>\n{{\"name\":\"f\",\"arguments\":{{\"a\":2}}}}\n</tool_call>"));
        let (_, calls) = s.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].arguments, json!({"a": 2}));
    }

    #[test]
    fn text_that_only_looks_like_a_tag_is_passed_on() {
        let mut s = CallSplitter::new(ToolSyntax::Tagged);
        assert_eq!(s.push("a <tool"), "a ");
        assert_eq!(s.push("s> b"), "<tools> b");
        assert_eq!(s.finish(), (String::new(), vec![]));
    }

    #[test]
    fn a_call_cut_short_comes_back_as_text() {
        let mut s = CallSplitter::new(ToolSyntax::Tagged);
        assert_eq!(s.push("<tool_call>\n{\"name\":\"get_weather\",\"argu"), "");
        let (rest, calls) = s.finish();
        assert!(calls.is_empty());
        assert_eq!(rest, "<tool_call>\n{\"name\":\"get_weather\",\"argu");
    }

    #[test]
    fn llama3_json_decides_at_the_first_character() {
        let mut s = CallSplitter::new(ToolSyntax::Llama3Json);
        assert_eq!(s.push("{\"name\":\"get_weather\","), "");
        s.push("\"parameters\":{\"city\":\"Paris\"}}");
        let (_, calls) = s.finish();
        assert_eq!(calls[0].arguments, json!({"city": "Paris"}));
        let mut s = CallSplitter::new(ToolSyntax::Llama3Json);
        assert_eq!(s.push("It is {sunny}"), "It is {sunny}");
        assert_eq!(s.finish(), (String::new(), vec![]));
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut t = weather();
        assert!(t.validate().is_ok());
        t.tools.push(t.tools[0].clone());
        assert!(t.validate().unwrap_err().to_string().contains("twice"));
        let mut t = weather();
        t.tools[0].name = "get weather".into();
        assert!(t.validate().is_err());
        let mut t = weather();
        t.choice = ToolChoice::Function("nope".into());
        assert!(t.validate().unwrap_err().to_string().contains("nope"));
        let mut t = weather();
        t.tools[0].parameters = json!({"type": "string"});
        assert!(t.validate().is_err());
    }

    #[test]
    fn earlier_calls_are_written_in_the_syntax() {
        let c = ToolCall {
            name: "f".into(),
            arguments: json!({"a": 1}),
        };
        assert_eq!(
            ToolSyntax::Tagged.write_call(&c),
            "<tool_call>\n{\"name\":\"f\",\"arguments\":{\"a\":1}}\n</tool_call>"
        );
        assert_eq!(
            ToolSyntax::Llama3Json.write_call(&c),
            "{\"name\":\"f\",\"parameters\":{\"a\":1}}"
        );
    }
}
