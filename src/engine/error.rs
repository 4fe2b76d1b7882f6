//! The engine's error type.

use std::path::Path;

use crate::store::StoreError;

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
    /// llguidance could not build its parser factory for the model's vocabulary.
    #[error("grammar engine: {0}")]
    Grammar(String),
    #[error("cannot start the model thread: {0}")]
    Thread(std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server busy, please try again: the request queue is full ({0} waiting)")]
    Overloaded(usize),
    /// The model lacks a capability (e.g. generate on an embedding model).
    #[error("the model does not support {0}")]
    NotCapable(&'static str),
    #[error("the model worker stopped unexpectedly")]
    WorkerGone,
    #[error("the server is shutting down: the answer was cut short; send the request again")]
    ShuttingDown,
}

impl EngineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
