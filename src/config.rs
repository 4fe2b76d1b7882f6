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
    /// Serve the Ollama-compatible HTTP API.
    Serve(ServeArgs),
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Measure prefill and decode speed.
    Bench(BenchArgs),
    /// Classify a document's text against a taxonomy (no Paperless needed).
    Classify(ClassifyArgs),
    /// Download a model named in a manifest (from the Hugging Face hub or HF_ENDPOINT).
    Pull(PullArgs),
    /// List the models that are present.
    List(ListArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// Model used for classification (the Paperless connector's OLLAMA_MODEL).
    #[arg(long, short, env = "OLLAMA_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Taxonomy JSON: {"tags": [...], "correspondents": [...], "document_types": [...]},
    /// each item {"id", "name"} as Paperless's API returns them.
    #[arg(long)]
    pub taxonomy: PathBuf,
    /// A text file with the document's content.
    #[arg(long, conflicts_with = "batch", required_unless_present = "batch")]
    pub file: Option<PathBuf>,
    /// JSON lines of {"id", "content"}: writes one prediction per line to stdout
    /// (the format ../shared/eval/score.py reads).
    #[arg(long)]
    pub batch: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Model name, e.g. llama3.2:1b.
    pub model: String,
    #[arg(long, env = "CANDLELIGHT_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[arg(long, env = "CANDLELIGHT_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    #[arg(long, env = "OLLAMA_MODELS")]
    pub ollama_models: Option<PathBuf>,
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
    /// Also measure constrained decoding with this JSON Schema file ("json" for JSON mode).
    #[arg(long)]
    pub format: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on: host, host:port, or a URL (Ollama's OLLAMA_HOST forms).
    #[arg(long, env = "OLLAMA_HOST", default_value = "127.0.0.1:11434")]
    pub host: String,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// An existing Ollama model folder whose pulled models are served too
    /// (default: ~/.ollama/models when it exists).
    #[arg(long, env = "OLLAMA_MODELS")]
    pub ollama_models: Option<PathBuf>,
    /// Load this model at start-up, so the first request does not wait for it.
    #[arg(long, env = "CANDLELIGHT_PRELOAD")]
    pub preload: Option<String>,
    /// How long a model stays loaded after a request (Go duration or seconds; negative =
    /// forever).
    #[arg(long, env = "OLLAMA_KEEP_ALIVE", default_value = "5m")]
    pub keep_alive: String,
    /// Requests admitted at once (running + waiting) before answering 503.
    #[arg(long, env = "OLLAMA_MAX_QUEUE", default_value_t = 512)]
    pub max_queue: usize,
    /// Models kept loaded at once.
    #[arg(long, env = "OLLAMA_MAX_LOADED_MODELS", default_value_t = 3)]
    pub max_loaded_models: usize,
    /// Requests one model serves at once, interleaved token by token (each has its own KV
    /// cache); further requests wait in the queue.
    #[arg(long, env = "OLLAMA_NUM_PARALLEL", default_value_t = 1)]
    pub num_parallel: usize,
    /// Model /api/classify uses when the request names none (the Paperless connector's
    /// OLLAMA_MODEL).
    #[arg(long, env = "OLLAMA_MODEL", default_value = DEFAULT_MODEL)]
    pub classify_model: String,
    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "CANDLELIGHT_SHUTDOWN_GRACE", default_value_t = 25)]
    pub shutdown_grace: u64,
}

/// Parses OLLAMA_HOST the way Ollama does: scheme optional, port 11434 when omitted.
pub fn parse_host(host: &str) -> Result<std::net::SocketAddr, String> {
    let h = host.trim();
    let h = h
        .strip_prefix("http://")
        .or_else(|| h.strip_prefix("https://"))
        .unwrap_or(h)
        .trim_end_matches('/');
    let with_port = if h.is_empty() {
        "127.0.0.1:11434".to_owned()
    } else if h.parse::<std::net::IpAddr>().is_ok() && h.contains(':') {
        format!("[{h}]:11434")
    } else if let Some(port) = h.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if h
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        h.to_owned()
    } else {
        format!("{h}:11434")
    };
    let with_port = with_port.replacen("localhost", "127.0.0.1", 1);
    with_port
        .parse()
        .map_err(|_| format!("OLLAMA_HOST '{host}' is not an address like 0.0.0.0:11434"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_host_forms() {
        let p = |s| parse_host(s).unwrap().to_string();
        assert_eq!(p("0.0.0.0"), "0.0.0.0:11434");
        assert_eq!(p("0.0.0.0:8080"), "0.0.0.0:8080");
        assert_eq!(p("http://127.0.0.1:11434/"), "127.0.0.1:11434");
        assert_eq!(p(":5000"), "127.0.0.1:5000");
        assert_eq!(p("localhost"), "127.0.0.1:11434");
        assert_eq!(p("::"), "[::]:11434");
        assert_eq!(p(""), "127.0.0.1:11434");
        assert!(parse_host("not a host").is_err());
    }
}
