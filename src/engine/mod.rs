//! Inference, with no HTTP and no wire types: models, tokenizers, templates, sampling and the
//! decode loop.

pub mod device;
pub mod generate;
pub mod kv_cache;
pub mod llama;
pub mod model;
pub mod sampler;
pub mod template;
pub mod tokenizer;

use std::path::Path;

pub use device::{select_device, DeviceChoice};
pub use generate::{generate, Completion, FinishReason, GenerateRequest, Session};
pub use model::{load, LanguageModel, LoadOptions, LoadedModel, ModelInfo};
pub use sampler::{Sampler, SamplingParams};
pub use template::{ChatMessage, ChatTemplate};
pub use tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file not found: {0}")]
    ModelNotFound(String),
    #[error("cannot load model: {0}")]
    BadModel(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error(
        "the input needs {needed} positions but the context holds {limit}; \
         shorten the input or raise num_ctx"
    )]
    ContextOverflow { needed: usize, limit: usize },
    #[error("{0}")]
    Device(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl EngineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
