//! Every setting in one place: command-line flags, then environment variables, then defaults
//! (clap's `env`). Environment names follow what Ollama users already set where one exists.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::DeviceChoice;
use crate::store::DEFAULT_MODEL;

#[derive(Debug, Parser)]
#[command(
    name = "candlelight",
    version,
    about = "Ollama-compatible LLM server on candle"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Measure prefill and decode speed.
    Bench(BenchArgs),
}

/// Where models live and how they run.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Compute device: cpu, cuda, cuda:N or auto (GPU when this build has CUDA and one answers).
    #[arg(long, env = "CANDLELIGHT_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// CPU threads for inference (default: physical cores).
    #[arg(long, env = "CANDLELIGHT_THREADS")]
    pub threads: Option<usize>,
    /// Folder with model manifests (*.toml) and the downloaded files in its cache/ subfolder.
    #[arg(long, env = "CANDLELIGHT_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Context window in tokens (Ollama's num_ctx default); capped by the model's own limit.
    #[arg(long, env = "OLLAMA_CONTEXT_LENGTH", default_value_t = 4096)]
    pub num_ctx: usize,
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Model name (e.g. smollm2:135m) or path to a GGUF file / safetensors folder.
    #[arg(long, short, env = "CANDLELIGHT_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// System prompt (the chat template's default when omitted).
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalty for repeating recent tokens. 1.1 here (the server follows Ollama's 1.0): small
    /// models fall into loops at temperature 0 without it.
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed: same seed and input give the same output.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Stop when this string appears (repeatable); it is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Send the prompt as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// The prompt.
    pub prompt: String,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long, short, env = "CANDLELIGHT_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens generated for the decode measurement.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}
