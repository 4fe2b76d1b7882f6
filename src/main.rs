use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use candlelight::bench::{BenchGrammar, BenchSetup};
use candlelight::config::{
    parse_host, BenchArgs, ClassifyArgs, Cli, Command, DevCommand, GenerateArgs, GpuArgs, ListArgs,
    MakeModelArgs, PullArgs, RuntimeArgs, ServeArgs, ShapedFormat, UndoArgs,
};
use candlelight::engine::device::{default_threads, set_cpu_threads};
use candlelight::engine::{self, ChatMessage, GenerateRequest, LoadedModel, SamplingParams};
use candlelight::store::ModelStore;
use candlelight::store::DEFAULT_MODEL;

fn main() -> Result<()> {
    engine::device::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "candlelight=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Generate(args) => generate(args),
        Command::Bench(args) => bench(args),
        Command::Classify(args) => classify(args),
        Command::Undo(args) => undo(args),
        Command::Pull(args) => pull(args),
        Command::List(args) => list(args),
        Command::Gpu(args) => gpu(args),
        Command::Dev(DevCommand::MakeModel(args)) => make_model(args),
    }
}

/// Applies the thread budget, then resolves and loads the model. Returns it with the
/// device's name, the thread count and the load time in seconds.
fn open(model: &str, rt: &RuntimeArgs) -> Result<(LoadedModel, String, usize, f64)> {
    let threads = rt.threads.unwrap_or_else(default_threads);
    set_cpu_threads(threads);
    let device = engine::select_device(rt.device)?;
    // The command line may name a file: the one place a path is a model.
    let store = ModelStore::new(&rt.models_dir).with_paths([model]);
    let resolved = store.resolve(model)?;
    let t = Instant::now();
    let lm = engine::load(
        &resolved.path,
        &engine::LoadOptions {
            device: device.clone(),
            max_context: rt.num_ctx,
            exact_weights: false,
            simd: rt.simd,
        },
    )
    .with_context(|| format!("loading {}", resolved.path.display()))?;
    let device_name = if device.is_cpu() {
        "cpu".to_owned()
    } else {
        rt.device.to_string()
    };
    Ok((lm, device_name, threads, t.elapsed().as_secs_f64()))
}

fn generate(args: GenerateArgs) -> Result<()> {
    let (lm, device, threads, load_s) = open(&args.model, &args.runtime)?;
    let prompt = if args.raw {
        lm.raw_prompt(&args.prompt)?
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.push(ChatMessage::new("user", args.prompt.as_str()));
        lm.chat_prompt(&messages)?
    };
    let req = GenerateRequest {
        prompt,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            repeat_last_n: args.repeat_last_n,
            seed: args.seed,
            logprobs: None,
        },
        max_tokens: Some(args.max_tokens),
        stop_tokens: lm.stop_tokens(),
        stop_strings: args.stop.clone(),
    };
    let cache = lm.model.new_cache(args.runtime.num_ctx)?;
    let mut session = engine::Session::new(cache);
    let mut stdout = std::io::stdout().lock();
    let done = engine::generate(&lm, &mut session, &req, &mut |text| {
        // A closed stdout (e.g. `| head`) ends generation instead of panicking.
        stdout.write_all(text.as_bytes()).is_ok() && stdout.flush().is_ok()
    })?;
    let _ = writeln!(stdout);
    let secs = |d: std::time::Duration| d.as_secs_f64().max(1e-9);
    eprintln!(
        "model {} ({}, {device}, {threads} threads), loaded in {load_s:.2}s\n\
         prompt: {} tokens in {:.2}s ({:.1} tok/s)\n\
         eval:   {} tokens in {:.2}s ({:.1} tok/s), finish: {}",
        args.model,
        lm.card.info.quantization,
        done.prompt_tokens,
        secs(done.prompt_eval),
        done.prompt_tokens as f64 / secs(done.prompt_eval),
        done.tokens.len(),
        secs(done.eval),
        done.tokens.len() as f64 / secs(done.eval),
        done.finish.as_str(),
    );
    Ok(())
}

fn bench_kernels(args: &BenchArgs, shape: &str) -> Result<()> {
    let (rows, cols) = shape
        .split_once('x')
        .and_then(|(r, c)| Some((r.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
        .filter(|&(r, c)| r > 0 && c > 0 && c % 256 == 0)
        .with_context(|| {
            format!("--kernels {shape}: give ROWSxCOLS, COLS a multiple of 256 (e.g. 8192x2048)")
        })?;
    let threads = args.runtime.threads.unwrap_or_else(default_threads);
    set_cpu_threads(threads);
    let reports = candlelight::bench::run_kernels(rows, cols, args.prompt_tokens, args.runs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    println!(
        "{rows}x{cols} weights, {threads} threads, prefill {} rows, median of {} runs",
        args.prompt_tokens, args.runs
    );
    println!("type   kernel                 prefill GMAC/s   decode GMAC/s   decode GB/s");
    for r in reports {
        println!(
            "{:<6} {:<22} {:>14.1} {:>15.2} {:>13.2}",
            r.block_type, r.kernel, r.prefill_gmac_s, r.decode_gmac_s, r.decode_gb_s
        );
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    if let Some(shape) = &args.kernels {
        return bench_kernels(&args, shape);
    }
    let mut rt = args.runtime.clone();
    rt.num_ctx = rt.num_ctx.max(args.prompt_tokens + args.gen_tokens + 1);
    let (lm, device, threads, load_s) = open(&args.model, &rt)?;
    let setup = BenchSetup {
        model: args.model.clone(),
        device,
        threads,
        load_seconds: load_s,
    };
    let r = candlelight::bench::run(&lm, &setup, args.prompt_tokens, args.gen_tokens, args.runs)?;
    let read_json = |p: &std::path::Path| -> anyhow::Result<serde_json::Value> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))
    };
    let grammar = match (&args.format, &args.tools) {
        (Some(p), _) if p.as_os_str() == "json" => {
            Some(BenchGrammar::Format(engine::Format::JsonObject))
        }
        (Some(p), _) => Some(BenchGrammar::Format(engine::Format::Schema(read_json(p)?))),
        (None, Some(p)) => {
            let list = read_json(p)?;
            let list = list
                .as_array()
                .with_context(|| format!("{}: expected a list of tools", p.display()))?;
            let tools = candlelight::api::tools::parse_tools(list)
                .map_err(|e| anyhow::anyhow!("{}: {}", p.display(), e.message))?;
            let tools =
                candlelight::api::tools::tool_use(tools, Some(engine::ToolChoice::Required), true)
                    .map_err(|e| anyhow::anyhow!("{}: {}", p.display(), e.message))?
                    .with_context(|| format!("{}: the list of tools is empty", p.display()))?;
            Some(BenchGrammar::Tools(tools))
        }
        (None, None) => None,
    };
    let constrained = match &grammar {
        None => None,
        Some(g) => Some(candlelight::bench::run_constrained(&lm, g, 256, args.runs)?),
    };
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(c) = &constrained {
            v["constrained"] = serde_json::to_value(c)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "model       {} ({})\ndevice      {} ({} threads)\nload        {:.2} s\n\
             prefill     {:.1} tok/s  ({} tokens, median of {})\n\
             decode      {:.1} tok/s  ({} tokens, median of {})\npeak RSS    {:.0} MiB",
            r.model,
            r.quantization,
            r.device,
            r.threads,
            r.load_seconds,
            r.prefill_tok_s,
            r.prompt_tokens,
            r.runs,
            r.decode_tok_s,
            r.gen_tokens,
            r.runs,
            r.peak_rss_mib
        );
        match r.read_bandwidth_gb_s {
            Some(bw) => println!(
                "weights     {:.1} GB/s read by decode, {:.0}% of this machine's {:.1} GB/s \
                 (read with {} threads)",
                r.decode_weight_gb_s,
                100.0 * r.decode_weight_gb_s / bw,
                bw,
                r.threads
            ),
            None => println!(
                "weights     {:.1} GB/s read by decode",
                r.decode_weight_gb_s
            ),
        }
        if let Some(c) = &constrained {
            println!(
                "constrained {:.1} tok/s vs {:.1} unconstrained ({} tokens; {:.0}% forced, {} \
                 masks computed)\nmask        {:.0} us median, {:.0} us p99 (full mask, every \
                 position)\noutput      {}",
                c.constrained_tok_s,
                c.unconstrained_tok_s,
                c.output_tokens,
                c.forced_share * 100.0,
                c.masks_computed,
                c.mask_us_median,
                c.mask_us_p99,
                c.output
            );
        }
    }
    Ok(())
}

/// The engine as the server runs it, for a command-line job.
fn cli_engine(rt: &RuntimeArgs, model: &str) -> Result<engine::Engine> {
    let threads = rt.threads.unwrap_or_else(default_threads);
    set_cpu_threads(threads);
    let device = engine::select_device(rt.device)?;
    Ok(engine::Engine::new(
        ModelStore::new(&rt.models_dir).with_paths([model]),
        engine::EngineOptions {
            device,
            num_ctx: rt.num_ctx,
            max_queue: 16,
            // The classifier and its encoder: swapping them per document would reload each.
            max_loaded: 2,
            num_parallel: 1,
            keep_alive: engine::KeepAlive::Forever,
            metrics: None,
            simd: rt.simd,
        },
    ))
}

/// The async runtime of a command-line job: one thread, the cores belong to inference.
fn cli_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

fn classify(args: ClassifyArgs) -> Result<()> {
    use candlelight::paperless::{
        neighbours::Neighbours, Classifier, Example, ExampleSet, Job, NoNeighbours, Taxonomy,
    };
    if let Some(id) = args.document_id {
        return classify_document(&args, id);
    }
    let path = args
        .taxonomy
        .as_ref()
        .expect("clap requires --taxonomy without --document-id");
    let taxonomy: Taxonomy = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a taxonomy JSON", path.display()))?;
    let names: Vec<&str> = args
        .fields
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let fields = candlelight::paperless::fields::select(&taxonomy.custom_fields, &names).map_err(
        |name| {
            anyhow::anyhow!(
                "--fields: {name:?} is not among the custom_fields of {} (add its definition \
                 as Paperless's /api/custom_fields/ lists it)",
                path.display()
            )
        },
    )?;
    let examples: Vec<Example> = match &args.examples {
        None => Vec::new(),
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: not an example", p.display(), n + 1))
            })
            .collect::<Result<_>>()?,
    };
    // Checked up front: a document the evidence decides alone never loads the model.
    ModelStore::new(&args.runtime.models_dir)
        .with_paths([args.model.as_str()])
        .resolve(&args.model)?;
    let engine = cli_engine(&args.runtime, &args.model)?;
    let classifier = Classifier::new(engine, args.paperless.embed_model().as_deref());
    cli_runtime()?.block_on(async move {
        let set = match (examples.is_empty(), classifier.encoder()) {
            (true, _) => None,
            (false, None) => anyhow::bail!("--examples needs CANDLELIGHT_EMBED_MODEL"),
            (false, Some(enc)) => Some(ExampleSet::new(enc, examples).await?),
        };
        let neighbours: &dyn Neighbours = match &set {
            Some(s) => s,
            None => &NoNeighbours,
        };
        let fields = &fields;
        fn job<'a>(
            args: &'a ClassifyArgs,
            taxonomy: &'a Taxonomy,
            fields: &'a [candlelight::paperless::fields::CustomField],
            neighbours: &'a dyn Neighbours,
            content: &'a str,
            id: Option<&'a str>,
        ) -> Job<'a> {
            Job {
                model: &args.model,
                taxonomy,
                content,
                num_ctx: None,
                new_correspondent: false,
                neighbours,
                id: id.filter(|_| args.leave_one_out),
                fields,
            }
        }
        if let Some(file) = &args.file {
            let content = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let c = classifier
                .classify(job(&args, &taxonomy, fields, neighbours, &content, None))
                .await?;
            println!("{}", serde_json::to_string_pretty(&c)?);
            return Ok(());
        }
        let batch = args
            .batch
            .as_ref()
            .expect("clap requires --file or --batch");
        let text = std::fs::read_to_string(batch)
            .with_context(|| format!("reading {}", batch.display()))?;
        for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let doc: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not JSON", batch.display(), n + 1))?;
            let content = doc["content"].as_str().unwrap_or("");
            let id = match &doc["id"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            };
            let c = classifier
                .classify(job(
                    &args,
                    &taxonomy,
                    fields,
                    neighbours,
                    content,
                    id.as_deref(),
                ))
                .await?;
            let s = &c.suggestion;
            println!(
                "{}",
                serde_json::json!({"id": doc["id"], "title": s.title,
                    "correspondent": s.correspondent, "document_type": s.document_type,
                    "tags": s.tags, "created": s.created,
                    "storage_path": s.storage_path, "custom_fields": s.custom_fields,
                    "latency_ms": c.latency.as_millis() as u64,
                    "explanation": c.explanation})
            );
            eprintln!("{} {} ms", doc["id"], c.latency.as_millis());
        }
        Ok(())
    })
}

/// `classify --document-id N`: the same path a webhook takes, forced (an explicit request
/// ignores the ai-processed tag), printing the report.
fn classify_document(args: &ClassifyArgs, id: i64) -> Result<()> {
    use candlelight::paperless::{Paperless, Trigger};
    let settings = args
        .paperless
        .settings(&args.model)?
        .context("--document-id needs PAPERLESS_URL and PAPERLESS_API_TOKEN (or --paperless-url and --paperless-token)")?;
    let engine = cli_engine(&args.runtime, &args.model)?;
    cli_runtime()?.block_on(async move {
        let p = Paperless::new(engine, settings, candlelight::metrics::Metrics::new())?;
        let report = p
            .process(id, Trigger::Cli, true, Some(args.paperless.dry_run))
            .await
            .with_context(|| format!("classifying Paperless document {id}"))?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    })
}

fn undo(args: UndoArgs) -> Result<()> {
    use candlelight::paperless::{Paperless, Trigger};
    let settings = args
        .paperless
        .settings(DEFAULT_MODEL)?
        .context("undo needs PAPERLESS_URL and PAPERLESS_API_TOKEN (or --paperless-url and --paperless-token), and the CANDLELIGHT_DATA_DIR the server writes its journal to")?;
    // No model runs: the engine is only what a Paperless handle is built with.
    let engine = cli_engine(&args.runtime, DEFAULT_MODEL)?;
    cli_runtime()?.block_on(async move {
        let p = Paperless::new(engine, settings, candlelight::metrics::Metrics::new())?;
        if args.list {
            let records = p.history(args.document_id)?;
            println!("{}", serde_json::to_string_pretty(&records)?);
            return Ok(());
        }
        let id = args.document_id.context("--document-id is required")?;
        let report = p
            .undo(id, Trigger::Cli)
            .await
            .with_context(|| format!("undoing our changes to Paperless document {id}"))?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    })
}

/// One NVML sample, as a table or JSON. No GPU is a state, so the exit code is 0 either way.
fn gpu(args: GpuArgs) -> Result<()> {
    use candlelight::gpu::{open_nvml, table, GpuMonitor};
    let monitor = GpuMonitor::start(open_nvml(), std::time::Duration::MAX);
    let state = monitor.get();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", table(&state));
    }
    Ok(())
}

fn make_model(args: MakeModelArgs) -> Result<()> {
    use candlelight::shaped::{self, GgufMix, Shape};
    let shape = Shape::by_name(&args.shape).with_context(|| {
        format!(
            "unknown shape '{}': use llama3.2-1b or llama3.2-tiny",
            args.shape
        )
    })?;
    if !args.tokenizer.is_file() {
        anyhow::bail!(
            "{} not found: run scripts/fetch-test-model, or pass --tokenizer",
            args.tokenizer.display()
        );
    }
    let t = Instant::now();
    match args.format {
        ShapedFormat::Safetensors => {
            shaped::write_safetensors(&shape, &args.tokenizer, &args.out, args.seed)?
        }
        ShapedFormat::Q8_0 => {
            shaped::write_gguf(&shape, &args.tokenizer, GgufMix::Q8_0, &args.out, args.seed)?
        }
        ShapedFormat::Q4KM => {
            shaped::write_gguf(&shape, &args.tokenizer, GgufMix::Q4KM, &args.out, args.seed)?
        }
    }
    eprintln!(
        "wrote {} ({} shape, {:.2} B parameters, RANDOM weights: for speed and memory only) in {:.0} s",
        args.out.display(),
        shape.name,
        shape.parameter_count() as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let rt = &args.runtime;
    let threads = rt.threads.unwrap_or_else(default_threads);
    set_cpu_threads(threads);
    let device = engine::select_device(rt.device)?;
    let addr = parse_host(&args.host)?;
    let header_timeout = candlelight::duration::parse_go_duration(&args.access.header_timeout)
        .and_then(candlelight::duration::from_seconds)
        .filter(|d| !d.is_zero())
        .with_context(|| {
            format!(
                "CANDLELIGHT_HEADER_TIMEOUT '{}': give a positive duration such as 30s",
                args.access.header_timeout
            )
        })?;
    let limits = candlelight::api::ServeLimits {
        max_connections: args.access.max_connections.max(1),
        header_timeout,
        grace: std::time::Duration::from_secs(args.shutdown_grace),
    };
    let paperless_settings = args.paperless.settings(&args.classify_model)?;
    let keep_alive = candlelight::api::params::keep_alive(Some(&serde_json::Value::String(
        args.keep_alive.clone(),
    )))
    .map_err(|e| anyhow::anyhow!("OLLAMA_KEEP_ALIVE: {e}"))?
    .unwrap_or(engine::KeepAlive::For(std::time::Duration::from_secs(300)));
    let ollama_dir = args.ollama_models.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".ollama/models"))
    });
    // Paths the operator configured are models too; over HTTP, only names are.
    let store = ModelStore::new(&rt.models_dir)
        .with_ollama_dir(ollama_dir)
        .with_paths(args.preload.iter().chain([&args.classify_model]));
    let metrics = candlelight::metrics::Metrics::new();
    let engine = engine::Engine::new(
        store,
        engine::EngineOptions {
            device: device.clone(),
            num_ctx: rt.num_ctx,
            max_queue: args.max_queue,
            max_loaded: args.max_loaded_models,
            num_parallel: args.num_parallel,
            keep_alive,
            metrics: Some(metrics.engine.clone()),
            simd: rt.simd,
        },
    );
    tracing::info!(%addr, device = ?device, threads, "starting candlelight");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // The HTTP side is light; the cores belong to inference.
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        engine.spawn_reaper();
        if let Some(model) = &args.preload {
            let (_, took) = engine
                .load(model, Some(engine::KeepAlive::Forever))
                .await
                .with_context(|| format!("preloading {model}"))?;
            tracing::info!(model, seconds = took.as_secs_f64(), "preloaded");
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (OLLAMA_HOST)"))?;
        let paperless = match paperless_settings {
            Some(settings) => {
                let p = candlelight::paperless::Paperless::new(
                    engine.clone(),
                    settings,
                    metrics.clone(),
                )?;
                // Paperless being down must not take the Ollama API with it: warn and go on;
                // the poller and the webhook retries catch up once it answers.
                match p.client().probe().await {
                    Ok(()) => tracing::info!(url = p.client().base_url(), "Paperless connected"),
                    Err(e) => tracing::error!(error = %e, "Paperless check failed; serving anyway"),
                }
                p.start();
                Some(p)
            }
            None => None,
        };
        // NVML is sampled every 5 s on its own thread; scrapes and /api/gpu only read.
        let gpu = candlelight::gpu::GpuMonitor::start(
            candlelight::gpu::open_nvml(),
            std::time::Duration::from_secs(5),
        );
        let access = &args.access;
        // A blank key (an empty Secret value) means no key, not "reject everything".
        let guard = candlelight::api::Guard::new(
            &access.origins,
            addr,
            access.api_key.as_deref(),
            args.paperless.webhook_token.as_deref(),
            access.allow_unauthenticated_paperless,
        );
        if paperless.is_some() && guard.paperless_writes_closed() {
            tracing::warn!(
                "listening beyond loopback without CANDLELIGHT_WEBHOOK_TOKEN or \
                 CANDLELIGHT_API_KEY: the webhook and /api/classify by document_id are refused \
                 (polling still runs)"
            );
        }
        let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
        let classifier = std::sync::Arc::new(candlelight::paperless::Classifier::new(
            engine.clone(),
            args.paperless.embed_model().as_deref(),
        ));
        let state = candlelight::api::AppState {
            gpu,
            classifier,
            engine,
            classify_model: args.classify_model.clone(),
            paperless,
            guard,
            limits: candlelight::api::Limits {
                body_bytes: access.max_body_bytes,
                embed_inputs: access.max_embed_inputs,
            },
            metrics,
            blocking: std::sync::Arc::new(tokio::sync::Semaphore::new(
                candlelight::api::BLOCKING_PERMITS,
            )),
            cut: cut_rx,
        };
        candlelight::api::serve(
            listener,
            state,
            cut_tx,
            limits,
            candlelight::api::shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}

fn pull(args: PullArgs) -> Result<()> {
    let store = ModelStore::new(&args.models_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let printer = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let p: candlelight::pull::Progress = p;
                match (p.completed, p.total) {
                    (Some(c), Some(t)) => {
                        eprintln!("{} {:.0}%", p.status, c as f64 * 100.0 / t as f64)
                    }
                    _ => eprintln!("{}", p.status),
                }
            }
        });
        let r = candlelight::pull::pull(&store, &args.model, &tx).await;
        drop(tx);
        let _ = printer.await;
        r.with_context(|| format!("pulling {}", args.model))
    })
}

fn list(args: ListArgs) -> Result<()> {
    let ollama_dir = args.ollama_models.or_else(|| {
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".ollama/models"))
    });
    let store = ModelStore::new(&args.models_dir).with_ollama_dir(ollama_dir);
    println!("{:<32} {:>10}  PATH", "NAME", "SIZE");
    for m in store.list()? {
        println!(
            "{:<32} {:>7.0} MB  {}",
            m.name,
            m.size as f64 / 1e6,
            m.path.display()
        );
    }
    Ok(())
}
