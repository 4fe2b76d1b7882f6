//! Chat templates, rendered natively (no Jinja): ChatML (SmolLM2, Qwen-style) and Llama 3.
//!
//! Rendering produces token ids directly: control tokens are inserted by id and message text is
//! encoded as plain text, so user content can never forge a turn boundary.

use super::tokenizer::Tokenizer;
use super::EngineError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
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

    fn pieces(&self, messages: &[ChatMessage], generation_prompt: bool) -> Vec<Piece> {
        let mut out = Vec::new();
        match self {
            ChatTemplate::ChatMl { default_system } => {
                let has_system = messages.first().is_some_and(|m| m.role == "system");
                let default = default_system.as_ref().filter(|_| !has_system);
                let defaults = default.map(|s| ChatMessage::new("system", s.as_str()));
                for m in defaults.iter().chain(messages) {
                    out.push(Piece::Special("<|im_start|>"));
                    out.push(Piece::Text(format!("{}\n{}", m.role, m.content)));
                    out.push(Piece::Special("<|im_end|>"));
                    out.push(Piece::Text("\n".into()));
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
                    out.push(Piece::Text(format!("{preamble}{system}")));
                    out.push(Piece::Special("<|eot_id|>"));
                }
                for m in messages {
                    header(&mut out, &m.role);
                    out.push(Piece::Text(m.content.trim().to_owned()));
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
        let mut ids = Vec::new();
        if matches!(self, ChatTemplate::Plain) && tok.add_bos {
            ids.extend(tok.bos);
        }
        let mut text = String::new();
        for piece in self.pieces(messages, generation_prompt) {
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
        self.pieces(messages, generation_prompt)
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
}
