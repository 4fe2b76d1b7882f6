//! Typed requests into the engine and the events that come back. The HTTP edge validates and
//! translates wire JSON into these; nothing here knows about HTTP.

use std::time::Duration;

use super::constraint::Format;
use super::generate::{Completion, TokenLogprob};
use super::sampler::SamplingParams;
use super::template::ChatMessage;
use super::tools::{ToolCall, ToolUse};
use super::EngineError;

#[derive(Debug, Clone)]
pub enum PromptInput {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Text sent as is (Ollama `raw`), BOS added if the model wants one.
    Raw(String),
    /// An earlier exchange's tokens (Ollama's `context`) followed by new templated messages.
    Continue {
        context: Vec<u32>,
        messages: Vec<ChatMessage>,
    },
    /// The request's own Go-style template (Ollama's `template`), after any `context`.
    Template {
        template: String,
        system: String,
        prompt: String,
        context: Vec<u32>,
    },
}

#[derive(Debug, Clone)]
pub struct GenerateTask {
    pub input: PromptInput,
    pub sampling: SamplingParams,
    /// `None`: until a stop condition or the context is full.
    pub num_predict: Option<usize>,
    /// Context window for this request; `None`: the server default.
    pub num_ctx: Option<usize>,
    pub stop: Vec<String>,
    /// Cut the middle of the longest user message to fit, instead of failing.
    pub truncate: bool,
    /// Constrain the output to JSON / a JSON Schema.
    pub format: Option<Format>,
    /// Functions the model may (or must) call; `None`: plain answers only.
    pub tools: Option<ToolUse>,
}

#[derive(Debug, Clone)]
pub struct EmbedTask {
    pub inputs: Vec<String>,
    pub truncate: bool,
    pub dimensions: Option<usize>,
    pub num_ctx: Option<usize>,
}

/// How long a model stays loaded after a request (Ollama's `keep_alive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Forever,
    /// Zero unloads right after the request.
    For(Duration),
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub completion: Completion,
    /// Prompt plus generated tokens (Ollama's `context`).
    pub context: Vec<u32>,
    /// The prompt was shortened to fit the context.
    pub truncated: bool,
    /// Time in the worker (prompt evaluation + generation).
    pub total: Duration,
    /// Calls the answer made (its text events carried only the text around them).
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug)]
pub enum Event {
    /// Log-probabilities of the tokens whose text comes in the next `Text` (when asked for).
    Logprobs(Vec<TokenLogprob>),
    Text(String),
    Done(Generated),
    Embeddings {
        vectors: Vec<Vec<f32>>,
        prompt_tokens: usize,
    },
    Error(EngineError),
}
