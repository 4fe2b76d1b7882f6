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
    /// Take back what candlelight wrote to a Paperless document (fields that still hold our
    /// values, tags we added), or list what it wrote (--list).
    Undo(UndoArgs),
    /// Download a model named in a manifest (from the Hugging Face hub or HF_ENDPOINT).
    Pull(PullArgs),
    /// List the models that are present.
    List(ListArgs),
    /// GPU state from NVML, like nvidia-smi (says "unavailable" without a GPU or driver).
    Gpu(GpuArgs),
    /// Developer tools (not for production use).
    #[command(hide = true, subcommand)]
    Dev(DevCommand),
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Write a model with a real architecture's shape and random weights, to measure speed and
    /// memory (its output is noise, never a quality measurement).
    MakeModel(MakeModelArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShapedFormat {
    /// Hugging Face folder, bf16 safetensors.
    Safetensors,
    /// GGUF, every matrix Q8_0.
    #[value(name = "q8_0")]
    Q8_0,
    /// GGUF, llama.cpp's Q4_K_M mix.
    #[value(name = "q4_k_m")]
    Q4KM,
}

#[derive(Debug, Clone, Args)]
pub struct MakeModelArgs {
    /// The shape: llama3.2-1b or llama3.2-tiny.
    #[arg(long, default_value = "llama3.2-1b")]
    pub shape: String,
    /// The tokenizer.json to use (scripts/fetch-test-model fetches Llama 3.2's).
    #[arg(long, default_value = "models/cache/llama3.2-tokenizer/tokenizer.json")]
    pub tokenizer: PathBuf,
    #[arg(long, value_enum)]
    pub format: ShapedFormat,
    /// Output: a .gguf file, or a folder for safetensors.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct GpuArgs {
    /// Print the sample as JSON (the shape of GET /api/gpu).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// Model used for classification (the Paperless connector's OLLAMA_MODEL).
    #[arg(long, short, env = "OLLAMA_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub paperless: PaperlessArgs,
    /// Classify this Paperless document and write the result back (needs PAPERLESS_URL and a
    /// token; --dry-run only reports).
    #[arg(long, conflicts_with_all = ["file", "batch", "taxonomy"])]
    pub document_id: Option<i64>,
    /// Taxonomy JSON: {"tags": [...], "correspondents": [...], "document_types": [...]},
    /// each item {"id", "name"} as Paperless's API returns them.
    #[arg(long, required_unless_present = "document_id")]
    pub taxonomy: Option<PathBuf>,
    /// A text file with the document's content.
    #[arg(long, conflicts_with = "batch", required_unless_present_any = ["batch", "document_id"])]
    pub file: Option<PathBuf>,
    /// JSON lines of {"id", "content"}: writes one prediction per line to stdout
    /// (the format ../shared/eval/score.py reads).
    #[arg(long)]
    pub batch: Option<PathBuf>,
    /// Labelled documents to learn from, as an archive would be: JSON lines of {"id",
    /// "content", "correspondent", "document_type", "tags"} (names).
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// With --batch and --examples: a document is never its own example (matched by id), so
    /// a labelled set can be evaluated against the rest of itself.
    #[arg(long, requires = "examples")]
    pub leave_one_out: bool,
    /// With --taxonomy: custom fields to extract, by name, comma-separated (the taxonomy's
    /// `custom_fields` define them, as Paperless's /api/custom_fields/ lists them). With
    /// --document-id, CANDLELIGHT_CUSTOM_FIELDS names them.
    #[arg(long = "fields", conflicts_with = "document_id")]
    pub fields: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct UndoArgs {
    /// The Paperless document whose changes by candlelight are taken back.
    #[arg(long, required_unless_present = "list")]
    pub document_id: Option<i64>,
    /// Print the journal of our writes (of --document-id, or all) instead of undoing.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub paperless: PaperlessArgs,
}

/// The Paperless-ngx connection and what the classifier may change. The names are those of
/// the Paperless-AI connector this replaces, plus CANDLELIGHT_* for what it did not have.
#[derive(Debug, Clone, Args)]
pub struct PaperlessArgs {
    /// Paperless-ngx base URL (`http://paperless:8000`; a trailing `/api` is accepted). Unset:
    /// no Paperless connection.
    #[arg(long, env = "PAPERLESS_URL")]
    pub paperless_url: Option<String>,
    /// API token (Paperless: profile → API Auth Token).
    #[arg(long, env = "PAPERLESS_API_TOKEN", hide_env_values = true)]
    pub paperless_token: Option<String>,
    /// File holding the token (a mounted Kubernetes Secret); wins over PAPERLESS_API_TOKEN.
    #[arg(long, env = "PAPERLESS_API_TOKEN_FILE")]
    pub paperless_token_file: Option<PathBuf>,
    /// Only process documents carrying one of TAGS (yes/no).
    #[arg(long, env = "PROCESS_PREDEFINED_DOCUMENTS", default_value = "no",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub process_predefined_documents: bool,
    /// Comma-separated tag names selecting documents when PROCESS_PREDEFINED_DOCUMENTS=yes.
    #[arg(long, env = "TAGS", default_value = "")]
    pub tags: String,
    /// Mark processed documents with AI_PROCESSED_TAG_NAME (yes/no). Polling needs it.
    #[arg(long, env = "ADD_AI_PROCESSED_TAG", default_value = "yes",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub add_ai_processed_tag: bool,
    #[arg(long, env = "AI_PROCESSED_TAG_NAME", default_value = "ai-processed")]
    pub ai_processed_tag_name: String,
    /// How often to look for unprocessed documents: cron step (`*/30 * * * *`, as Paperless-AI),
    /// seconds, or a duration (`5m`); `0` turns polling off.
    #[arg(long, env = "SCAN_INTERVAL", default_value = "5m")]
    pub scan_interval: String,
    /// Fields the classifier writes: any of title,correspondent,document_type,tags,created,
    /// storage_path (not by default: Paperless moves the file when a storage path is set).
    #[arg(
        long,
        env = "CANDLELIGHT_WRITE_FIELDS",
        default_value = "title,correspondent,document_type,tags,created"
    )]
    pub write_fields: String,
    /// Custom fields to extract and fill, by their names in Paperless, comma-separated (e.g.
    /// `Betrag,Rechnungsnummer,Fällig am`). Each value is valid for its field's type and
    /// taken from the text; a value the document already has is never replaced. Empty: none.
    #[arg(long, env = "CANDLELIGHT_CUSTOM_FIELDS", default_value = "")]
    pub custom_fields: String,
    /// Replace values a document already has (its own title, correspondent, type) (yes/no).
    #[arg(long, env = "CANDLELIGHT_OVERWRITE", default_value = "no",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub overwrite: bool,
    /// Let the model name a correspondent that does not exist yet, and create it (yes/no).
    /// Tags and document types always come from the existing ones.
    #[arg(long, env = "CANDLELIGHT_CREATE_CORRESPONDENTS", default_value = "no",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub create_correspondents: bool,
    /// Who owns a correspondent candlelight creates: `document` (the document's owner, shared
    /// as the document is, so a name read in one user's document stays theirs) or `none`
    /// (every user's).
    #[arg(long, env = "CANDLELIGHT_CREATED_OWNER", default_value = "none",
          value_parser = ["none", "document"])]
    pub created_owner: String,
    /// Classify and report, write nothing.
    #[arg(long, env = "CANDLELIGHT_DRY_RUN", default_value = "no", num_args = 0..=1,
          default_missing_value = "yes",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub dry_run: bool,
    /// When set, the webhook endpoint requires `Authorization: Bearer <token>` (add it as a
    /// header in the Paperless workflow). Required once candlelight listens beyond loopback
    /// (or CANDLELIGHT_API_KEY, or CANDLELIGHT_ALLOW_UNAUTHENTICATED_PAPERLESS=yes).
    #[arg(long, env = "CANDLELIGHT_WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,
    /// Context window (tokens) of a classification: instructions, the shortlisted taxonomy,
    /// the document (its middle cut when long) and the answer.
    #[arg(long, env = "CANDLELIGHT_CLASSIFY_CTX", default_value_t = crate::paperless::classifier::CLASSIFY_CTX)]
    pub classify_ctx: usize,
    /// Documents waiting for classification at most; webhooks beyond it get 503.
    #[arg(long, env = "CANDLELIGHT_QUEUE_CAPACITY", default_value_t = 1000)]
    pub queue_capacity: usize,
    /// Tag for documents that cannot be classified (no text, model failure, after
    /// CANDLELIGHT_MAX_ATTEMPTS tries); removing it retries the document. Empty: never tag.
    #[arg(long, env = "CANDLELIGHT_FAILED_TAG", default_value = "ai-failed")]
    pub failed_tag: String,
    /// Review mode: park each suggestion under this tag (created if missing) instead of
    /// writing it; it is written once the tag is removed. Empty (default): write at once.
    #[arg(long, env = "CANDLELIGHT_REVIEW_TAG", default_value = "")]
    pub review_tag: String,
    /// Attempts before a document with transient failures gets the failure tag.
    #[arg(long, env = "CANDLELIGHT_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Sentence encoder the classifier uses for similar documents and for what the taxonomy's
    /// names mean (multilingual); empty: none (the text's cues and the model only).
    #[arg(
        long,
        env = "CANDLELIGHT_EMBED_MODEL",
        default_value = "multilingual-e5"
    )]
    pub embed_model: String,
    /// Folder for what candlelight keeps between runs (the archive index, the write journal).
    #[arg(long, env = "CANDLELIGHT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

impl PaperlessArgs {
    /// The encoder's model name, or None when switched off.
    pub fn embed_model(&self) -> Option<String> {
        Some(self.embed_model.trim().to_owned()).filter(|m| !m.is_empty())
    }

    /// CANDLELIGHT_CUSTOM_FIELDS as a list.
    pub fn custom_field_names(&self) -> Vec<String> {
        self.custom_fields
            .split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// The connection settings, or None when PAPERLESS_URL is unset.
    pub fn settings(&self, model: &str) -> Result<Option<crate::paperless::Settings>, ConfigError> {
        let Some(url) = self
            .paperless_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        else {
            return Ok(None);
        };
        let token = match &self.paperless_token_file {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                })?
            }
            None => self.paperless_token.clone().unwrap_or_default(),
        };
        if token.trim().is_empty() {
            return Err(ConfigError::NoToken);
        }
        let only_tags: Vec<String> = if self.process_predefined_documents {
            let tags: Vec<String> = self
                .tags
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            if tags.is_empty() {
                return Err(ConfigError::NoTags);
            }
            tags
        } else {
            vec![]
        };
        Ok(Some(crate::paperless::Settings {
            url: url.to_owned(),
            token: token.trim().to_owned(),
            model: model.to_owned(),
            num_ctx: Some(self.classify_ctx),
            only_tags,
            policy: crate::paperless::Policy {
                write: crate::paperless::Fields::parse(&self.write_fields)?,
                overwrite: self.overwrite,
                create_correspondents: self.create_correspondents,
                created_owned_by_document_owner: self.created_owner == "document",
                ai_tag: self
                    .add_ai_processed_tag
                    .then(|| self.ai_processed_tag_name.trim().to_owned())
                    .filter(|n| !n.is_empty()),
            },
            scan_interval: crate::paperless::triggers::parse_scan_interval(&self.scan_interval)?,
            dry_run: self.dry_run,
            retry_delay: std::time::Duration::from_secs(30),
            queue_capacity: self.queue_capacity.max(1),
            failed_tag: Some(self.failed_tag.trim().to_owned()).filter(|t| !t.is_empty()),
            review_tag: Some(self.review_tag.trim().to_owned()).filter(|t| !t.is_empty()),
            max_attempts: self.max_attempts.max(1),
            embed_model: self.embed_model(),
            data_dir: Some(self.data_dir.clone()),
            custom_fields: self.custom_field_names(),
        }))
    }
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
    /// Our CPU kernels: auto (the best this CPU has), avx512, avx2, or none (candle's for every
    /// matrix). For timing each level on one machine; leave it at auto.
    #[arg(long, env = "CANDLELIGHT_SIMD", default_value = "auto")]
    pub simd: crate::engine::kernels::SimdLevel,
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
    /// Also measure constrained tool calling: a JSON file with a list of tools in the
    /// Ollama/OpenAI shape (`[{"type": "function", "function": {…}}]`), a call required.
    #[arg(long, conflicts_with = "format")]
    pub tools: Option<PathBuf>,
    /// Measure the matrix kernels alone instead of a model: every block type, layout and SIMD
    /// kernel (AVX-512, AVX2) this CPU runs, on a random ROWSxCOLS matrix (Llama 3.2 1B's MLP:
    /// 8192x2048), prefill-shaped (--prompt-tokens activation rows) and decode-shaped (one row).
    #[arg(long, value_name = "ROWSxCOLS", num_args = 0..=1, default_missing_value = "8192x2048")]
    pub kernels: Option<String>,
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
    #[command(flatten)]
    pub paperless: PaperlessArgs,
    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "CANDLELIGHT_SHUTDOWN_GRACE", default_value_t = 25)]
    pub shutdown_grace: u64,
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Who may use the API and how much one request or client may ask for.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Web page origins allowed besides the local ones (Ollama's OLLAMA_ORIGINS:
    /// comma-separated, `*` matches anything, e.g. `https://chat.example.com,http://*.lan:*`).
    #[arg(long, env = "OLLAMA_ORIGINS", default_value = "")]
    pub origins: String,
    /// Required as `Authorization: Bearer <key>` by everything that writes: pulling, copying
    /// and deleting models, and Paperless writes. Unset: those are open (as in Ollama), except
    /// Paperless writes beyond loopback.
    #[arg(long, env = "CANDLELIGHT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Accept the webhook and /api/classify by document_id without any token even when
    /// listening beyond loopback (yes/no): anyone on the network can then make candlelight
    /// write to Paperless.
    #[arg(long, env = "CANDLELIGHT_ALLOW_UNAUTHENTICATED_PAPERLESS", default_value = "no",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub allow_unauthenticated_paperless: bool,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "CANDLELIGHT_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Texts one embedding request may carry.
    #[arg(long, env = "CANDLELIGHT_MAX_EMBED_INPUTS", default_value_t = 1024)]
    pub max_embed_inputs: usize,
    /// Client connections held at once; more wait in the kernel's listen queue.
    #[arg(long, env = "CANDLELIGHT_MAX_CONNECTIONS", default_value_t = 128)]
    pub max_connections: usize,
    /// Time a client has to send its request headers, and to send the next request on an
    /// idle kept-alive connection (Go duration or seconds).
    #[arg(long, env = "CANDLELIGHT_HEADER_TIMEOUT", default_value = "30s")]
    pub header_timeout: String,
}

/// A setting that cannot be used, with what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("OLLAMA_HOST '{0}' is not an address like 0.0.0.0:11434")]
    Host(String),
    #[error("PAPERLESS_API_TOKEN_FILE {}: {source}", path.display())]
    TokenFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "PAPERLESS_URL is set but no token: set PAPERLESS_API_TOKEN or PAPERLESS_API_TOKEN_FILE \
         (Paperless: profile → API Auth Token)"
    )]
    NoToken,
    #[error("PROCESS_PREDEFINED_DOCUMENTS=yes needs TAGS (comma-separated tag names)")]
    NoTags,
    #[error("CANDLELIGHT_WRITE_FIELDS: {0}")]
    WriteFields(#[from] crate::paperless::UnknownField),
    #[error(transparent)]
    ScanInterval(#[from] crate::paperless::triggers::BadScanInterval),
}

/// Parses OLLAMA_HOST the way Ollama does: scheme optional, port 11434 when omitted.
pub fn parse_host(host: &str) -> Result<std::net::SocketAddr, ConfigError> {
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
        .map_err(|_| ConfigError::Host(host.to_owned()))
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
