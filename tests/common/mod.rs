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
                },
            )
            .expect("test model loads");
            Mutex::new(lm)
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// For tests that run inference in a child process: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
