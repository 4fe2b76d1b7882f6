//! A model as the rest of the program sees it: its [`ModelCard`] (facts, template, stop
//! strings, capabilities — computed once, at load or inspection) and, once loaded, the weights
//! and tokenizer beside it.

use std::sync::Arc;

use super::spec::{LanguageModel, ModelInfo, ModelKind};
use crate::engine::constraint::{ConstraintFactory, Grammars};
use crate::engine::template::{ChatMessage, ChatTemplate};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

/// What a model is, for everyone who reports on it or prompts it: `/api/show`, `/api/ps`,
/// the worker and the templates read this one value instead of re-deriving it from the file.
#[derive(Debug, Clone)]
pub struct ModelCard {
    pub info: ModelInfo,
    pub template: ChatTemplate,
    /// Token ids that end an answer: the template's end of turn and the tokenizer's EOS.
    pub stop_tokens: Vec<u32>,
    /// The same tokens as text (`/api/show` lists them as `stop` parameters).
    pub stop_strings: Vec<String>,
}

impl ModelCard {
    /// A sentence encoder's: no chat template, nothing ends a generation it never runs.
    pub fn encoder(info: ModelInfo) -> Self {
        Self {
            info,
            template: ChatTemplate::Plain,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
        }
    }

    /// A decoder's: the template the file's chat template (or its tokenizer) implies.
    pub fn decoder(info: ModelInfo, tokenizer: &Tokenizer) -> Self {
        let template = ChatTemplate::detect(info.chat_template.as_deref(), tokenizer);
        let stop_tokens = template.stop_tokens(tokenizer);
        let stop_strings = stop_tokens
            .iter()
            .map(|id| tokenizer.decode(&[*id]))
            .collect();
        Self {
            info,
            template,
            stop_tokens,
            stop_strings,
        }
    }

    /// What the model can be asked for, in Ollama's words: `tools` where its template has a
    /// tool-call syntax.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut c = self.info.kind.capabilities().to_vec();
        if self.info.kind == ModelKind::Generative && self.template.tool_syntax().is_some() {
            c.push("tools");
        }
        c
    }
}

/// A model ready to run: weights, tokenizer and its card.
pub struct LoadedModel {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Arc<Tokenizer>,
    pub card: ModelCard,
    /// Its grammar compiler (shared with the engine's admission).
    pub grammars: Grammars,
}

impl LoadedModel {
    pub(crate) fn new(
        model: Box<dyn LanguageModel>,
        tokenizer: Tokenizer,
        info: ModelInfo,
    ) -> Self {
        let card = match info.kind {
            ModelKind::Embedding => ModelCard::encoder(info),
            ModelKind::Generative => ModelCard::decoder(info, &tokenizer),
        };
        let tokenizer = Arc::new(tokenizer);
        let grammars = Grammars::new(
            tokenizer.clone(),
            model.config().vocab_size,
            card.stop_tokens.clone(),
        );
        Self {
            model,
            tokenizer,
            card,
            grammars,
        }
    }

    /// The grammar engine for this model; its EOS is the end-of-turn token.
    pub fn constraints(&self) -> Result<&ConstraintFactory> {
        self.grammars.factory()
    }

    /// Prompt tokens for a conversation, ending with the assistant's turn opener.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.card.template.render(messages, true, &self.tokenizer)
    }

    /// Prompt tokens for text sent as is (no template): BOS first if the model wants one.
    pub fn raw_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self
            .tokenizer
            .bos
            .filter(|_| self.tokenizer.add_bos)
            .into_iter()
            .collect();
        ids.extend(self.tokenizer.encode(text)?);
        Ok(ids)
    }

    /// Token ids that end an answer.
    pub fn stop_tokens(&self) -> Vec<u32> {
        self.card.stop_tokens.clone()
    }
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("card", &self.card)
            .finish()
    }
}
