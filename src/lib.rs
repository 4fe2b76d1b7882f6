//! candlelight: in-process LLM inference on candle behind an Ollama-compatible API.
//!
//! Data flows one way: HTTP edge (`api`) -> `engine` -> model, and back as a stream.

pub mod api;
pub mod bench;
pub mod config;
pub mod duration;
pub mod engine;
pub mod gpu;
pub mod metrics;
pub mod paperless;
pub mod pull;
pub mod shaped;
pub mod store;
