//! Chat templates, rendered natively (no Jinja): ChatML (SmolLM2, Qwen-style) and Llama 3.
//!
//! Rendering produces token ids directly: control tokens are inserted by id and message text is
//! encoded as plain text, so user content can never forge a turn boundary.

use super::tokenizer::Tokenizer;
use super::tools::{tool_lines, Tool, ToolCall, ToolSyntax};
use super::EngineError;

#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// Calls an assistant turn made.
    pub tool_calls: Vec<ToolCall>,
    /// The function a `tool` turn answers for.
    pub tool_name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n`. `default_system` is inserted when the
    /// conversation does not start with a system message (SmolLM2's template does this).
    ChatMl { default_system: Option<String> },
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` after `<|begin_of_text|>`.
    /// Llama 3.1/3.2 templates open every conversation with a system block that starts with a
    /// knowledge-cutoff line (`system_preamble`, read from the template), system message or not.
    Llama3 { system_preamble: Option<String> },
    /// No template known: messages are joined as plain text.
    Plain,
}

/// One piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Special(&'static str),
    Text(String),
}

const CHATML_SYSTEM_OPEN: &str = "<|im_start|>system\n";

impl ChatTemplate {
    /// Picks the template from the model's own template text, falling back to its vocabulary.
    pub fn detect(source: Option<&str>, tok: &Tokenizer) -> Self {
        let src = source.unwrap_or("");
        let chatml = src.contains("<|im_start|>")
            || (source.is_none() && tok.special_id("<|im_start|>").is_some());
        let llama3 = src.contains("<|start_header_id|>")
            || (source.is_none() && tok.special_id("<|start_header_id|>").is_some());
        if chatml {
            ChatTemplate::ChatMl {
                default_system: chatml_default_system(src),
            }
        } else if llama3 {
            ChatTemplate::Llama3 {
                system_preamble: llama3_system_preamble(src),
            }
        } else {
            ChatTemplate::Plain
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ChatTemplate::ChatMl { .. } => "chatml",
            ChatTemplate::Llama3 { .. } => "llama3",
            ChatTemplate::Plain => "plain",
        }
    }

    /// The same layout in Ollama's Go-template notation (what `/api/show` reports); kept
    /// beside `pieces`, which renders it, so the two change together.
    pub fn go_template(&self) -> &'static str {
        match self {
            ChatTemplate::ChatMl { .. } => {
                "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
            }
            ChatTemplate::Llama3 {
                system_preamble: Some(_),
            } => {
                "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n{{ if .System }}{{ .System }}{{ end }}<|eot_id|>{{- range .Messages }}{{ if ne .Role \"system\" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
            }
            ChatTemplate::Llama3 { .. } => {
                "<|begin_of_text|>{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
            }
            ChatTemplate::Plain => "{{ .Prompt }}",
        }
    }

    /// How this template writes tool calls; `None`: it cannot offer tools.
    pub fn tool_syntax(&self) -> Option<ToolSyntax> {
        match self {
            ChatTemplate::ChatMl { .. } => Some(ToolSyntax::Tagged),
            ChatTemplate::Llama3 { .. } => Some(ToolSyntax::Llama3Json),
            ChatTemplate::Plain => None,
        }
    }

    fn pieces(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        generation_prompt: bool,
    ) -> Vec<Piece> {
        let mut out = Vec::new();
        match self {
            ChatTemplate::ChatMl { default_system } => {
                let turn = |out: &mut Vec<Piece>, role: &str, content: &str| {
                    out.push(Piece::Special("<|im_start|>"));
                    out.push(Piece::Text(format!("{role}\n{content}")));
                    out.push(Piece::Special("<|im_end|>"));
                    out.push(Piece::Text("\n".into()));
                };
                let mut messages = messages;
                let system = match messages.first() {
                    Some(m) if m.role == "system" => {
                        messages = &messages[1..];
                        Some(m.content.clone())
                    }
                    _ => default_system.clone(),
                };
                let system = match (system, tools.is_empty()) {
                    (s, true) => s,
                    (s, false) => Some(chatml_tools_system(s.as_deref(), tools)),
                };
                if let Some(s) = system {
                    turn(&mut out, "system", &s);
                }
                let mut i = 0;
                while i < messages.len() {
                    let m = &messages[i];
                    if m.role == "tool" {
                        // Consecutive results go back together, in one user turn.
                        let mut results = Vec::new();
                        while let Some(r) = messages.get(i).filter(|m| m.role == "tool") {
                            results
                                .push(format!("<tool_response>\n{}\n</tool_response>", r.content));
                            i += 1;
                        }
                        turn(&mut out, "user", &results.join("\n"));
                        continue;
                    }
                    turn(&mut out, &m.role, &with_calls(m, ToolSyntax::Tagged));
                    i += 1;
                }
                if generation_prompt {
                    out.push(Piece::Special("<|im_start|>"));
                    out.push(Piece::Text("assistant\n".into()));
                }
            }
            ChatTemplate::Llama3 { system_preamble } => {
                out.push(Piece::Special("<|begin_of_text|>"));
                let header = |out: &mut Vec<Piece>, role: &str| {
                    out.push(Piece::Special("<|start_header_id|>"));
                    out.push(Piece::Text(role.to_owned()));
                    out.push(Piece::Special("<|end_header_id|>"));
                    out.push(Piece::Text("\n\n".into()));
                };
                let mut messages = messages;
                if let Some(preamble) = system_preamble {
                    let system = match messages.first() {
                        Some(m) if m.role == "system" => {
                            messages = &messages[1..];
                            m.content.trim()
                        }
                        _ => "",
                    };
                    header(&mut out, "system");
                    let note = if tools.is_empty() {
                        ""
                    } else {
                        LLAMA3_TOOLS_SYSTEM
                    };
                    let sep = if note.is_empty() || system.is_empty() {
                        ""
                    } else {
                        "\n\n"
                    };
                    out.push(Piece::Text(format!("{preamble}{system}{sep}{note}")));
                    out.push(Piece::Special("<|eot_id|>"));
                }
                // Llama 3.2 reads the functions with the question they are for: the last user turn.
                let last_user = messages.iter().rposition(|m| m.role == "user");
                for (i, m) in messages.iter().enumerate() {
                    let role = if m.role == "tool" {
                        "ipython"
                    } else {
                        m.role.as_str()
                    };
                    header(&mut out, role);
                    let content = if Some(i) == last_user && !tools.is_empty() {
                        llama3_tools_question(tools, m.content.trim())
                    } else {
                        with_calls(m, ToolSyntax::Llama3Json).trim().to_owned()
                    };
                    out.push(Piece::Text(content));
                    out.push(Piece::Special("<|eot_id|>"));
                }
                if generation_prompt {
                    header(&mut out, "assistant");
                }
            }
            ChatTemplate::Plain => {
                let text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                out.push(Piece::Text(text.join("\n\n")));
            }
        }
        out
    }

    /// Renders a conversation to prompt tokens, ending with the assistant's turn opener when
    /// `generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        generation_prompt: bool,
        tok: &Tokenizer,
    ) -> Result<Vec<u32>, EngineError> {
        self.render_with_tools(messages, &[], generation_prompt, tok)
    }

    /// [`render`](Self::render) with functions offered to the model.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        generation_prompt: bool,
        tok: &Tokenizer,
    ) -> Result<Vec<u32>, EngineError> {
        let mut ids = Vec::new();
        if matches!(self, ChatTemplate::Plain) && tok.add_bos {
            ids.extend(tok.bos);
        }
        let mut text = String::new();
        for piece in self.pieces(messages, tools, generation_prompt) {
            match piece {
                Piece::Text(t) => text.push_str(&t),
                Piece::Special(name) => {
                    if !text.is_empty() {
                        ids.extend(tok.encode(&std::mem::take(&mut text))?);
                    }
                    let id = tok.special_id(name).ok_or_else(|| {
                        EngineError::Tokenizer(format!(
                            "the {} chat template needs the token {name}, which this model's \
                             vocabulary lacks",
                            self.name()
                        ))
                    })?;
                    ids.push(id);
                }
            }
        }
        if !text.is_empty() {
            ids.extend(tok.encode(&text)?);
        }
        Ok(ids)
    }

    /// The same conversation as text (control tokens written out), for display and logs.
    pub fn render_text(&self, messages: &[ChatMessage], generation_prompt: bool) -> String {
        self.render_text_with_tools(messages, &[], generation_prompt)
    }

    /// [`render_text`](Self::render_text) with functions offered to the model.
    pub fn render_text_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        generation_prompt: bool,
    ) -> String {
        self.pieces(messages, tools, generation_prompt)
            .into_iter()
            .map(|p| match p {
                Piece::Special(s) => s.to_owned(),
                Piece::Text(t) => t,
            })
            .collect()
    }

    /// Token ids that end the assistant's turn: the template's end-of-turn marker and EOS.
    pub fn stop_tokens(&self, tok: &Tokenizer) -> Vec<u32> {
        let names: &[&str] = match self {
            ChatTemplate::ChatMl { .. } => &["<|im_end|>", "<|endoftext|>"],
            ChatTemplate::Llama3 { .. } => &["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"],
            ChatTemplate::Plain => &[],
        };
        let mut ids: Vec<u32> = names.iter().filter_map(|n| tok.special_id(n)).collect();
        ids.extend(tok.eos);
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A turn's text followed by the calls it made, in the template's syntax.
fn with_calls(m: &ChatMessage, syntax: ToolSyntax) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !m.content.is_empty() {
        parts.push(m.content.clone());
    }
    parts.extend(m.tool_calls.iter().map(|c| syntax.write_call(c)));
    parts.join("\n")
}

/// The system turn of a ChatML conversation that offers tools (the Hermes/Qwen layout).
fn chatml_tools_system(system: Option<&str>, tools: &[Tool]) -> String {
    let lead = system.map(|s| format!("{s}\n\n")).unwrap_or_default();
    format!(
        "{lead}# Tools\n\nYou may call one or more functions to answer the user. The functions \
         are listed inside <tools></tools>:\n<tools>\n{}\n</tools>\n\nTo call a function, \
         answer with a JSON object holding its name and arguments inside \
         <tool_call></tool_call> tags:\n<tool_call>\n{{\"name\": <function name>, \
         \"arguments\": <arguments object>}}\n</tool_call>",
        tool_lines(tools)
    )
}

/// Added to a Llama 3 system turn when functions are offered.
const LLAMA3_TOOLS_SYSTEM: &str = "When you receive the result of a function call, use it to \
    answer the user's original question.\n\nYou are a helpful assistant that can call functions.";

/// The last user turn of a Llama 3 conversation that offers functions, in the layout Llama
/// 3.1/3.2 were trained on for JSON function calls.
fn llama3_tools_question(tools: &[Tool], question: &str) -> String {
    let listed = tool_lines(tools).replace('\n', "\n\n");
    format!(
        "Given the following functions, please respond with a JSON for a function call with its \
         proper arguments that best answers the given prompt.\n\nRespond in the format \
         {{\"name\": function name, \"parameters\": dictionary of argument name and its \
         value}}. Do not use variables.\n\n{listed}\n\nQuestion: {question}"
    )
}

/// SmolLM2's template inserts a fixed system prompt when none is given; read it from the
/// template text rather than hard-coding it.
fn chatml_default_system(src: &str) -> Option<String> {
    if !src.contains("!= 'system'") && !src.contains("!= \"system\"") {
        return None;
    }
    let start = src.find(CHATML_SYSTEM_OPEN)? + CHATML_SYSTEM_OPEN.len();
    let end = start + src[start..].find("<|im_end|>")?;
    Some(src[start..end].replace("\\n", "\n"))
}

/// The knowledge-cutoff line of a Llama 3.1/3.2 template, rendered the way Ollama's llama3.2
/// template does (`Cutting Knowledge Date: December 2023` and a blank line). Meta's Jinja
/// template also prints today's date; leaving it out keeps prompts identical from day to day
/// (so the prompt cache holds) and matches what Ollama users got before.
fn llama3_system_preamble(src: &str) -> Option<String> {
    const KEY: &str = "Cutting Knowledge Date: ";
    let start = src.find(KEY)? + KEY.len();
    let date: String = src[start..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == ' ')
        .collect();
    let date = date.trim();
    (!date.is_empty()).then(|| format!("{KEY}{date}\n\n"))
}

/// A request's own prompt template (Ollama's `template` field) in the subset of Go's
/// text/template that single-turn templates use: `{{ .System }}`, `{{ .Prompt }}`,
/// `{{ .Response }}` (always empty: the model writes it), `{{ if .X }}…{{ else }}…{{ end }}`,
/// and `{{-`/`-}}` whitespace trimming. Control tokens written in the template are control
/// tokens; the substituted values never are.
pub fn render_go_template(
    template: &str,
    system: &str,
    prompt: &str,
    tok: &Tokenizer,
) -> Result<Vec<u32>, EngineError> {
    let out = go_template_segments(template, system, prompt)?;
    // Literal text may hold control tokens; values are plain text. Adjacent text is encoded
    // together so BPE sees the same string a full render would give it.
    let mut ids = Vec::new();
    let mut text = String::new();
    for (literal, s) in out {
        if !literal {
            text.push_str(&s);
            continue;
        }
        let mut s = s.as_str();
        while !s.is_empty() {
            match tok.find_special(s) {
                Some((at, len, id)) => {
                    text.push_str(&s[..at]);
                    if !text.is_empty() {
                        ids.extend(tok.encode(&std::mem::take(&mut text))?);
                    }
                    ids.push(id);
                    s = &s[at + len..];
                }
                None => {
                    text.push_str(s);
                    s = "";
                }
            }
        }
    }
    if !text.is_empty() {
        ids.extend(tok.encode(&text)?);
    }
    Ok(ids)
}

/// Whether `template` is in the subset [`render_go_template`] renders (a 400 at create time
/// instead of at every request).
pub fn check_go_template(template: &str) -> Result<(), EngineError> {
    go_template_segments(template, "system", "prompt").map(|_| ())
}

/// The template's output as (literal?, text) segments, in order.
fn go_template_segments(
    template: &str,
    system: &str,
    prompt: &str,
) -> Result<Vec<(bool, String)>, EngineError> {
    let bad = |m: String| EngineError::InvalidInput(format!("template: {m}"));
    let value = |name: &str| -> Result<&str, EngineError> {
        match name {
            ".System" => Ok(system),
            ".Prompt" => Ok(prompt),
            ".Response" => Ok(""),
            other => Err(bad(format!("unsupported field {other}"))),
        }
    };
    // (literal?, text) segments in output order.
    let mut out: Vec<(bool, String)> = Vec::new();
    // For each open `if`: (parent active, this branch active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.last().is_none_or(|(p, b)| *p && *b);
    let mut rest = template;
    let mut trim_next = false;
    while !rest.is_empty() {
        let (lit, action) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut lit = if trim_next { lit.trim_start() } else { lit };
        let Some(after) = action else {
            if active(&stack) {
                out.push((true, lit.to_owned()));
            }
            break;
        };
        let end = after.find("}}").ok_or_else(|| bad("unclosed {{".into()))?;
        let mut inner = &after[..end];
        if let Some(s) = inner.strip_prefix('-') {
            lit = lit.trim_end();
            inner = s;
        }
        trim_next = inner.ends_with('-');
        let inner = inner.trim_end_matches('-').trim();
        if active(&stack) {
            out.push((true, lit.to_owned()));
        }
        rest = &after[end + 2..];
        let words: Vec<&str> = inner.split_whitespace().collect();
        match words.as_slice() {
            ["if", field] => {
                let parent = active(&stack);
                stack.push((parent, !value(field)?.is_empty()));
            }
            ["else"] => {
                let top = stack
                    .last_mut()
                    .ok_or_else(|| bad("else without if".into()))?;
                top.1 = !top.1;
            }
            ["end"] => {
                stack.pop().ok_or_else(|| bad("end without if".into()))?;
            }
            [field] if field.starts_with('.') => {
                if active(&stack) {
                    out.push((false, value(field)?.to_owned()));
                }
            }
            _ => return Err(bad(format!("unsupported action {{{{ {inner} }}}}"))),
        }
    }
    if !stack.is_empty() {
        return Err(bad("if without end".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn smol() -> ChatTemplate {
        ChatTemplate::ChatMl {
            default_system: chatml_default_system(SMOL),
        }
    }

    #[test]
    fn chatml_inserts_default_system_prompt_only_when_missing() {
        let t = smol();
        let text = t.render_text(&[ChatMessage::new("user", "Hi")], true);
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let text = t.render_text(
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi"),
            ],
            false,
        );
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn chatml_without_default_rule_has_no_default_system() {
        let t = ChatTemplate::ChatMl {
            default_system: chatml_default_system("{{'<|im_start|>' + message['role']}}"),
        };
        assert_eq!(
            t.render_text(&[ChatMessage::new("user", "Hi")], true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama3_layout() {
        let text = ChatTemplate::Llama3 {
            system_preamble: None,
        }
        .render_text(
            &[
                ChatMessage::new("system", "Sys"),
                ChatMessage::new("user", "  Hello \n"),
            ],
            true,
        );
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn llama32_system_block_carries_the_knowledge_cutoff() {
        let src = "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\
                   {{- \"Cutting Knowledge Date: December 2023\\n\" }}";
        let t = ChatTemplate::Llama3 {
            system_preamble: llama3_system_preamble(src),
        };
        let hdr = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
                   Cutting Knowledge Date: December 2023\n\n";
        assert_eq!(
            t.render_text(&[ChatMessage::new("user", "Hi")], true),
            format!(
                "{hdr}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            )
        );
        assert_eq!(
            t.render_text(
                &[
                    ChatMessage::new("system", " Sys "),
                    ChatMessage::new("user", "Hi")
                ],
                false
            ),
            format!("{hdr}Sys<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
        );
    }

    fn weather() -> Vec<Tool> {
        vec![Tool {
            name: "get_weather".into(),
            description: "Weather".into(),
            parameters: serde_json::json!({"type": "object"}),
        }]
    }

    fn call_and_result() -> Vec<ChatMessage> {
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls.push(ToolCall {
            name: "get_weather".into(),
            arguments: serde_json::json!({"city": "Paris"}),
        });
        let mut result = ChatMessage::new("tool", "14 C");
        result.tool_name = Some("get_weather".into());
        vec![
            ChatMessage::new("user", "Weather?"),
            call,
            result.clone(),
            result,
        ]
    }

    #[test]
    fn chatml_offers_tools_in_the_system_turn_and_returns_results_as_one_user_turn() {
        let text = smol().render_text_with_tools(&call_and_result(), &weather(), true);
        let tools_line = r#"{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object"}}}"#;
        assert!(
            text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"),
            "{text}"
        );
        assert!(
            text.contains(&format!("<tools>\n{tools_line}\n</tools>")),
            "{text}"
        );
        assert!(
            text.ends_with(
                "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n\
                 {\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call><|im_end|>\n\
                 <|im_start|>user\n<tool_response>\n14 C\n</tool_response>\n<tool_response>\n14 C\n\
                 </tool_response><|im_end|>\n<|im_start|>assistant\n"
            ),
            "{text}"
        );
        // Without tools nothing changes.
        assert_eq!(
            smol().render_text_with_tools(&[ChatMessage::new("user", "Hi")], &[], true),
            smol().render_text(&[ChatMessage::new("user", "Hi")], true)
        );
    }

    #[test]
    fn llama3_lists_functions_with_the_last_question_and_results_come_from_ipython() {
        let t = ChatTemplate::Llama3 {
            system_preamble: Some("Cutting Knowledge Date: December 2023\n\n".into()),
        };
        let mut messages = call_and_result();
        messages.push(ChatMessage::new("user", "And tomorrow?"));
        let text = t.render_text_with_tools(&messages, &weather(), true);
        assert!(text.starts_with(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge \
             Date: December 2023\n\nWhen you receive the result of a function call"
        ));
        assert!(
            text.contains(
                "<|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n{\"name\":\"get_weather\",\
             \"parameters\":{\"city\":\"Paris\"}}<|eot_id|>\
             <|start_header_id|>ipython<|end_header_id|>\n\n14 C<|eot_id|>"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\"parameters\":{\"type\":\"object\"}}}\n\nQuestion: And tomorrow?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("Given the following functions").count(), 1);
    }
}
