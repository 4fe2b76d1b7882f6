//! A time-boxed fuzzer over the request bodies of every endpoint, in-process through the same
//! router `serve` runs (real engine, real test model): bodies built from each endpoint's own
//! fields with hostile values (paths, NaN, huge numbers, wrong types, deep nesting), plus
//! random JSON and random bytes, under random content types, origins and keys. Every answer
//! must arrive, must not be a panic, and every error must be a JSON `{"error"}`; streams must
//! end with a final or an error line.
//!
//! `CANDLELIGHT_FUZZ_SECONDS` (default 45) sets the time box, `CANDLELIGHT_FUZZ_SEED` replays
//! a run (each failure prints its seed and case).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use candlelight::api::{AppState, Guard, Limits};
use candlelight::engine::{Engine, EngineOptions, KeepAlive};
use candlelight::store::ModelStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

const MODELS: &[&str] = &[
    "smollm2:135m",
    "all-minilm",
    "nosuch:1b",
    "/etc/passwd",
    "../../etc/hostname",
    "",
    "a:b:c",
    "llama3.2:1b",
];

/// (method, path, fields the handler reads)
const ENDPOINTS: &[(&str, &str, &[&str])] = &[
    (
        "POST",
        "/api/generate",
        &[
            "model",
            "prompt",
            "suffix",
            "system",
            "template",
            "context",
            "raw",
            "images",
            "options",
            "stream",
            "keep_alive",
            "format",
            "think",
            "truncate",
            "logprobs",
            "top_logprobs",
        ],
    ),
    (
        "POST",
        "/api/chat",
        &[
            "model",
            "messages",
            "tools",
            "options",
            "stream",
            "keep_alive",
            "format",
            "think",
            "truncate",
            "logprobs",
            "top_logprobs",
        ],
    ),
    ("POST", "/api/show", &["model", "name", "verbose"]),
    (
        "POST",
        "/api/embed",
        &[
            "model",
            "input",
            "truncate",
            "dimensions",
            "options",
            "keep_alive",
        ],
    ),
    (
        "POST",
        "/api/embeddings",
        &["model", "prompt", "options", "keep_alive"],
    ),
    (
        "POST",
        "/api/pull",
        &["model", "name", "stream", "insecure"],
    ),
    ("POST", "/api/copy", &["source", "destination"]),
    ("DELETE", "/api/delete", &["model", "name"]),
    (
        "POST",
        "/api/classify",
        &[
            "content",
            "taxonomy",
            "model",
            "document_id",
            "dry_run",
            "num_ctx",
        ],
    ),
    (
        "POST",
        "/api/paperless/webhook",
        &["document_id", "doc_url", "id"],
    ),
    (
        "POST",
        "/v1/chat/completions",
        &[
            "model",
            "messages",
            "stream",
            "stream_options",
            "max_tokens",
            "temperature",
            "top_p",
            "seed",
            "stop",
            "response_format",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "logprobs",
            "top_logprobs",
            "frequency_penalty",
        ],
    ),
    (
        "POST",
        "/v1/completions",
        &[
            "model",
            "prompt",
            "stream",
            "max_tokens",
            "temperature",
            "seed",
            "stop",
            "suffix",
        ],
    ),
    (
        "POST",
        "/v1/embeddings",
        &["model", "input", "encoding_format", "dimensions"],
    ),
    ("GET", "/api/tags", &[]),
    ("GET", "/api/ps", &[]),
    ("GET", "/api/version", &[]),
    ("GET", "/v1/models", &[]),
    ("GET", "/v1/models/smollm2:135m", &[]),
    ("GET", "/metrics", &[]),
    ("GET", "/api/gpu", &[]),
];

const OPTION_KEYS: &[&str] = &[
    "num_ctx",
    "num_predict",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "seed",
    "stop",
    "repeat_penalty",
    "repeat_last_n",
    "num_thread",
    "mirostat",
    "use_mmap",
];

fn scalar(rng: &mut StdRng) -> Value {
    match rng.random_range(0..22) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(1e30),
        5 => json!(-1e30),
        6 => json!(1.5),
        7 => json!(i64::MAX),
        8 => json!(u64::MAX),
        9 => json!(rng.random_range(-100..5000)),
        10 => json!(""),
        11 => json!("NaN"),
        12 => json!("inf"),
        13 => json!("99999999999h"),
        14 => json!("5m"),
        15 => json!("json"),
        16 => json!("x".repeat(rng.random_range(0..3000))),
        17 => json!("\u{0}\u{ffff}🦀 <|im_end|> <|eot_id|>"),
        18 => json!(MODELS[rng.random_range(0..MODELS.len())]),
        19 => json!("-1"),
        20 => json!("Rechnung vom 01.02.2024, Betrag 12,00 EUR"),
        _ => json!(1u64 << 53),
    }
}

fn value(rng: &mut StdRng, depth: usize) -> Value {
    if depth > 3 || rng.random_bool(0.6) {
        return scalar(rng);
    }
    if rng.random_bool(0.5) {
        let n = rng.random_range(0..5);
        Value::Array((0..n).map(|_| value(rng, depth + 1)).collect())
    } else {
        let n = rng.random_range(0..4);
        let keys = [
            "type",
            "role",
            "content",
            "name",
            "id",
            "properties",
            "enum",
        ];
        Value::Object(
            (0..n)
                .map(|_| {
                    (
                        keys[rng.random_range(0..keys.len())].to_string(),
                        value(rng, depth + 1),
                    )
                })
                .collect(),
        )
    }
}

/// A plausible value for a named field, hostile often enough.
fn field(rng: &mut StdRng, name: &str) -> Value {
    if rng.random_bool(0.25) {
        return value(rng, 0);
    }
    match name {
        "model" | "name" | "source" | "destination" => {
            // Real inference is slow: the loadable models are picked rarely.
            let i = if rng.random_bool(0.15) {
                rng.random_range(0..2)
            } else {
                rng.random_range(2..MODELS.len())
            };
            json!(MODELS[i])
        }
        "options" => {
            let mut m = Map::new();
            for _ in 0..rng.random_range(0..4) {
                let k = OPTION_KEYS[rng.random_range(0..OPTION_KEYS.len())];
                m.insert(k.into(), scalar(rng));
            }
            // Keep generations short when they do run.
            m.insert("num_predict".into(), json!(rng.random_range(-1..8)));
            Value::Object(m)
        }
        "messages" => {
            let n = rng.random_range(0..4);
            let roles = ["system", "user", "assistant", "tool", "", "evil"];
            Value::Array(
                (0..n)
                    .map(|_| {
                        json!({"role": roles[rng.random_range(0..roles.len())],
                               "content": scalar(rng)})
                    })
                    .collect(),
            )
        }
        "format" | "response_format" => match rng.random_range(0..4) {
            0 => json!("json"),
            1 => json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
            2 => json!({"type": "json_schema", "json_schema": {"schema": value(rng, 1)}}),
            _ => value(rng, 1),
        },
        "taxonomy" => json!({"tags": [{"id": 1, "name": scalar(rng)}],
                             "correspondents": value(rng, 2), "document_types": []}),
        "input" => {
            let n = rng.random_range(0..6);
            if rng.random_bool(0.5) {
                Value::Array((0..n).map(|_| scalar(rng)).collect())
            } else {
                scalar(rng)
            }
        }
        "context" => json!([1, 2, rng.random_range(0..200_000)]),
        "examples" => json!([{"content": scalar(rng), "document_type": scalar(rng),
                              "tags": value(rng, 2), "id": scalar(rng)}]),
        "max_tokens" => json!(rng.random_range(-1..8)),
        _ => scalar(rng),
    }
}

/// A request the endpoint accepts, to mutate from (so that the fuzzer gets past validation).
fn valid(path: &str, rng: &mut StdRng) -> Value {
    let stream = rng.random_bool(0.5);
    match path {
        "/api/generate" => json!({"model": "smollm2:135m", "prompt": "Hi", "stream": stream,
                                  "options": {"num_predict": 4}}),
        "/api/chat" => json!({"model": "smollm2:135m", "stream": stream,
                              "messages": [{"role": "user", "content": "Hi"}],
                              "options": {"num_predict": 4}}),
        "/api/show" => json!({"model": "smollm2:135m"}),
        "/api/embed" => json!({"model": "all-minilm", "input": ["a", "b"]}),
        "/api/embeddings" => json!({"model": "all-minilm", "prompt": "a"}),
        "/api/pull" => json!({"model": "smollm2:135m", "stream": stream}),
        "/api/copy" => json!({"source": "smollm2:135m", "destination": "fz"}),
        "/api/delete" => json!({"model": "fz"}),
        "/api/classify" => json!({"content": "Rechnung Nr. 7 vom 01.02.2024 über 12,00 EUR",
                                  "taxonomy": {"tags": [{"id": 1, "name": "Strom"}],
                                               "document_types": [{"id": 1, "name": "Rechnung"}]}}),
        "/api/paperless/webhook" => json!({"document_id": 1}),
        "/v1/chat/completions" => json!({"model": "smollm2:135m", "max_tokens": 4,
                                         "stream": stream,
                                         "messages": [{"role": "user", "content": "Hi"}]}),
        "/v1/completions" => json!({"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 4,
                                    "stream": stream}),
        "/v1/embeddings" => json!({"model": "all-minilm", "input": "a"}),
        _ => json!({}),
    }
}

/// `(body, hostile)`: hostile bodies may also carry hostile headers.
fn body(rng: &mut StdRng, path: &str, fields: &[&str]) -> (Vec<u8>, bool) {
    let hostile = match rng.random_range(0..10) {
        0 => (0..rng.random_range(0..200))
            .map(|_| rng.random())
            .collect(),
        1 => value(rng, 0).to_string().into_bytes(),
        2..=5 => {
            // A valid request with a few fields changed or removed.
            let mut v = valid(path, rng);
            for _ in 0..rng.random_range(0..3) {
                if fields.is_empty() {
                    break;
                }
                let f = fields[rng.random_range(0..fields.len())];
                if rng.random_bool(0.2) {
                    v.as_object_mut().map(|m| m.remove(f));
                } else {
                    v[f] = field(rng, f);
                }
            }
            return (v.to_string().into_bytes(), false);
        }
        _ => {
            let mut m = Map::new();
            for f in fields {
                if rng.random_bool(0.6) {
                    m.insert(f.to_string(), field(rng, f));
                }
            }
            let mut bytes = Value::Object(m).to_string().into_bytes();
            if rng.random_bool(0.05) {
                bytes.truncate(rng.random_range(0..bytes.len().max(1)));
            }
            bytes
        }
    };
    (hostile, true)
}

fn state(models_dir: &std::path::Path) -> AppState {
    let store = ModelStore::new(models_dir);
    let engine = Engine::new(
        store,
        EngineOptions {
            device: candle_core::Device::Cpu,
            // Bounds every generation the fuzzer starts.
            num_ctx: 256,
            max_queue: 8,
            max_loaded: 2,
            num_parallel: 1,
            keep_alive: KeepAlive::Forever,
            metrics: None,
            simd: Default::default(),
        },
    );
    let (_, cut) = tokio::sync::watch::channel(false);
    AppState {
        classifier: Arc::new(candlelight::paperless::Classifier::new(
            engine.clone(),
            Some("multilingual-e5"),
        )),
        engine,
        classify_model: "smollm2:135m".into(),
        paperless: None,
        guard: Guard::new("", "127.0.0.1:11434".parse().unwrap(), None, None, false),
        limits: Limits::default(),
        metrics: candlelight::metrics::Metrics::new(),
        gpu: candlelight::gpu::GpuMonitor::start(
            Err(candlelight::gpu::GpuError::Other("fuzz".into())),
            Duration::MAX,
        ),
        blocking: Arc::new(tokio::sync::Semaphore::new(2)),
        cut,
    }
}

#[test]
fn no_request_body_panics_or_hangs_a_handler() {
    let _one = common::serial();
    common::init_threads();
    let seconds: u64 = std::env::var("CANDLELIGHT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("CANDLELIGHT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("fuzzing for {seconds} s, CANDLELIGHT_FUZZ_SEED={seed}");
    // Pulls go to a closed port: refused at once instead of waiting on the network.
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let models = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(models.path().join("cache")).unwrap();
    std::os::unix::fs::symlink(
        common::test_model_path(),
        models.path().join("cache").join(common::TEST_MODEL_FILE),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        common::e5_model_path(),
        models.path().join("cache").join(common::E5_FILE),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        common::embedding_model_path(),
        models
            .path()
            .join("cache")
            .join(common::EMBEDDING_MODEL_DIR),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = candlelight::api::router(state(models.path()));
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cases = 0;
    let content_types = [
        None,
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=utf-8"),
        Some("application/json;;charset=\"=\""),
    ];
    let mut seen: std::collections::BTreeMap<(&str, u16), usize> = Default::default();
    while started.elapsed() < Duration::from_secs(seconds) {
        cases += 1;
        let (method, path, fields) = ENDPOINTS[rng.random_range(0..ENDPOINTS.len())];
        let (mut bytes, hostile) = body(&mut rng, path, fields);
        if path == "/api/delete" {
            // Deleting the real models would leave nothing to fuzz the model with.
            let text = String::from_utf8_lossy(&bytes)
                .replace("smollm2", "fz")
                .replace("all-minilm", "fz");
            bytes = text.into_bytes();
        }
        let mut req = Request::builder()
            .method(method.parse::<Method>().unwrap())
            .uri(path)
            .header("host", "localhost:11434");
        let types = if hostile {
            &content_types[..]
        } else {
            &content_types[..3]
        };
        if let Some(ct) = types[rng.random_range(0..types.len())] {
            req = req.header("content-type", ct);
        }
        if hostile && rng.random_bool(0.1) {
            req = req.header("origin", "http://evil.example");
        }
        if rng.random_bool(0.1) {
            req = req.header("authorization", "Bearer x");
        }
        let req = req.body(Body::from(bytes.clone())).unwrap();
        let case = format!(
            "seed {seed}, case {cases}: {method} {path} {}",
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(600)
                .collect::<String>()
        );
        let app = app.clone();
        let (status, ctype, text) = rt.block_on(async move {
            let r = tokio::time::timeout(Duration::from_secs(120), app.oneshot(req))
                .await
                .unwrap_or_else(|_| panic!("no answer within 120 s: {case}"))
                .unwrap();
            let status = r.status();
            let ctype = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            let bytes = tokio::time::timeout(
                Duration::from_secs(120),
                axum::body::to_bytes(r.into_body(), 64 << 20),
            )
            .await
            .unwrap_or_else(|_| panic!("body did not end within 120 s: {case}"))
            .unwrap();
            (status, ctype, String::from_utf8_lossy(&bytes).into_owned())
        });
        let case = format!(
            "seed {seed}, case {cases}: {method} {path} {}",
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(600)
                .collect::<String>()
        );
        *seen.entry((path, status.as_u16())).or_default() += 1;
        assert!(
            !text.contains(candlelight::api::PANIC_MESSAGE),
            "a handler panicked: {case}"
        );
        assert!(
            status.as_u16() != 500,
            "500 {text}: {case} (internal errors are bugs here)"
        );
        if status.is_client_error() || status.is_server_error() {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("error is not JSON ({status}): {text}: {case}"));
            assert!(!v["error"].is_null(), "{status} {text}: {case}");
        } else if ctype.contains("ndjson") {
            let last = text.lines().last().unwrap_or("");
            let v: Value = serde_json::from_str(last)
                .unwrap_or_else(|_| panic!("last line not JSON: {last}: {case}"));
            assert!(
                v["done"] == true || v["error"].is_string() || v["status"].is_string(),
                "stream ended without a final line: {last}: {case}"
            );
        } else if ctype.contains("event-stream") {
            assert!(
                text.trim_end().ends_with("data: [DONE]"),
                "SSE stream without [DONE]: {case}"
            );
        }
    }
    eprintln!("{cases} requests, no panic, no hang, every error JSON; by endpoint and status:");
    for ((path, status), n) in &seen {
        eprintln!("  {path} {status}: {n}");
    }
    assert!(cases > 50, "the fuzzer ran only {cases} cases");
    // The fuzzer reached the model, not only the validation in front of it.
    for path in [
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/v1/chat/completions",
    ] {
        assert!(
            seen.get(&(path, 200)).is_some_and(|n| *n > 0),
            "no request to {path} got through to the model: {seen:?}"
        );
    }
}

#[test]
fn webhook_bodies_never_panic_the_id_parser() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let webhook_document_id = |ct: &str, body: &[u8]| {
        rt.block_on(candlelight::paperless::triggers::webhook_document_id(
            ct, body,
        ))
    };
    let mut rng = StdRng::seed_from_u64(7);
    let types = [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b",
        "multipart/form-data",
        "",
    ];
    for _ in 0..20_000 {
        let ct = types[rng.random_range(0..types.len())];
        let body: Vec<u8> = match rng.random_range(0..4) {
            0 => (0..rng.random_range(0..300))
                .map(|_| rng.random())
                .collect(),
            1 => value(&mut rng, 0).to_string().into_bytes(),
            2 => format!(
                "--b\r\nContent-Disposition: form-data; name=\"doc_url\"\r\n\r\n{}\r\n--b--",
                scalar(&mut rng)
            )
            .into_bytes(),
            _ => format!(
                "document_id=%{:x}&doc_url=/documents/{}",
                rng.random::<u8>(),
                scalar(&mut rng)
            )
            .into_bytes(),
        };
        if let Some(id) = webhook_document_id(ct, &body) {
            assert!(id > 0);
        }
    }
}
