//! `/api/pull` and `candlelight pull` downloading for real over HTTP. The model hub cannot be
//! reached here, so a loopback server stands in for it, serving the real test model at the
//! hub's URL layout (`/{repo}/resolve/main/{file}`), found through `HF_ENDPOINT`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use common::Server;
use serde_json::{json, Value};

const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Serves the test model at `/org/smol/resolve/main/smol.gguf` and the embedding model's
/// folder under `/org/minilm/resolve/main/` (404 elsewhere) until the test process ends;
/// returns its base URL.
fn fake_hub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let model = std::fs::read(common::test_model_path()).unwrap();
    let minilm = common::embedding_model_path();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap_or(0);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let body = match path.strip_prefix("/org/minilm/resolve/main/") {
                _ if path == "/org/smol/resolve/main/smol.gguf" => Some(model.clone()),
                Some(file) if !file.contains("..") => std::fs::read(minilm.join(file)).ok(),
                _ => None,
            };
            if let Some(body) = body {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    format!("http://{addr}")
}

fn manifest(dir: &std::path::Path, name: &str, sha: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\ntags = [\"latest\"]\nfile = \"{name}.gguf\"\nsha256 = \"{sha}\"\n\
                 source = {{ hf = \"org/smol\", path = \"smol.gguf\" }}\n"
        ),
    )
    .unwrap();
}

fn pull_lines(s: &Server, model: &str) -> Vec<Value> {
    s.post_ndjson("/api/pull", json!({"model": model}))
}

#[test]
fn pull_downloads_verifies_and_serves_the_model() {
    let _one = common::serial();
    let hub = fake_hub();
    let s = Server::start_with_env(&[], &[("HF_ENDPOINT", &hub)]);
    manifest(s.models_dir.path(), "pulled", SHA);
    manifest(s.models_dir.path(), "corrupt", &"0".repeat(64));

    let lines = pull_lines(&s, "pulled");
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses.first(), Some(&"pulling manifest"));
    assert_eq!(statuses.last(), Some(&"success"), "{lines:?}");
    assert!(statuses.contains(&"verifying sha256 digest"));
    let last_progress = lines
        .iter()
        .rev()
        .find(|l| l["completed"].is_u64())
        .unwrap();
    assert_eq!(last_progress["completed"], last_progress["total"]);
    assert_eq!(last_progress["digest"], format!("sha256:{SHA}"));
    let path = s.models_dir.path().join("cache/pulled.gguf");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        std::fs::metadata(common::test_model_path()).unwrap().len()
    );

    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/generate", s.url))
        .json(&json!({"model": "pulled", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A digest mismatch is an error line and leaves no file behind.
    let lines = pull_lines(&s, "corrupt");
    let err = lines.last().unwrap()["error"].as_str().unwrap().to_owned();
    assert!(err.contains("digest mismatch"), "{err}");
    let cache = s.models_dir.path().join("cache");
    assert!(!cache.join("corrupt.gguf").exists() && !cache.join("corrupt.part").exists());

    // Known name without a source, unknown name: errors with status.
    let (st, v) = {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/api/pull", s.url))
            .json(&json!({"model": "nosuch:1b"}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!(st, 404, "{v}");

    // Already present: success without downloading.
    let lines = pull_lines(&s, "smollm2:135m");
    assert_eq!(lines.last().unwrap()["status"], "success");
    assert_eq!(lines.len(), 2);
}

#[test]
fn cli_pull_reports_progress_and_says_what_to_do_offline() {
    let _one = common::serial();
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "pulled", SHA);
    let out = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(["pull", "pulled"])
        .env("CANDLELIGHT_MODELS_DIR", dir.path())
        .env("HF_ENDPOINT", fake_hub())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("100%") && err.contains("success"), "{err}");
    assert!(dir.path().join("cache/pulled.gguf").exists());

    // Nothing listens on the endpoint: the message says what happened and what to do.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(["pull", "llama3.2:1b"])
        .env("CANDLELIGHT_MODELS_DIR", dir.path())
        .env("HF_ENDPOINT", format!("http://{closed}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Is this machine online?") && err.contains("copy the file to"),
        "{err}"
    );
}

#[test]
fn pull_fetches_a_model_folder_and_the_embedder_serves_from_it() {
    let _one = common::serial();
    let hub = fake_hub();
    let s = Server::start_with_env(&[], &[("HF_ENDPOINT", &hub)]);
    let files = r#"["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "modules.json", "sentence_bert_config.json",
        "1_Pooling/config.json"]"#;
    let weights_sha = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
    for (name, sha) in [("minilm", weights_sha), ("badminilm", &"0".repeat(64)[..])] {
        std::fs::write(
            s.models_dir.path().join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\ntags = [\"latest\"]\nfile = \"{name}-folder\"\n\
                 sha256 = \"{sha}\"\n[source]\nhf = \"org/minilm\"\nfiles = {files}\n"
            ),
        )
        .unwrap();
    }
    let lines = pull_lines(&s, "minilm");
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let folder = s.models_dir.path().join("cache/minilm-folder");
    assert!(folder.join("1_Pooling/config.json").is_file());
    assert!(!s
        .models_dir
        .path()
        .join("cache/minilm-folder.part")
        .exists());
    let r: Value = reqwest::blocking::Client::new()
        .post(format!("{}/api/embed", s.url))
        .json(&json!({"model": "minilm", "input": "Rechnung"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        r["embeddings"][0].as_array().map(Vec::len),
        Some(384),
        "{r}"
    );

    // Weights that do not match the manifest never become a model.
    let lines = pull_lines(&s, "badminilm");
    let last = lines.last().unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap_or("")
            .contains("digest mismatch"),
        "{lines:?}"
    );
    assert!(!s.models_dir.path().join("cache/badminilm-folder").exists());
    assert!(!s
        .models_dir
        .path()
        .join("cache/badminilm-folder.part")
        .exists());
}
