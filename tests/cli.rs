//! The `candlelight` binary as a user runs it.

mod common;

use std::process::{Command, Output};

fn candlelight(args: &[&str]) -> Output {
    let _one_at_a_time = common::serial();
    let model = common::test_model_path();
    Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(args)
        .env(
            "CANDLELIGHT_MODELS_DIR",
            model.parent().unwrap().parent().unwrap(),
        )
        .env("CANDLELIGHT_THREADS", "2")
        .env_remove("CANDLELIGHT_MODEL")
        .output()
        .expect("binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn generate_streams_the_answer_and_reports_speed() {
    let out = candlelight(&[
        "generate",
        "--device",
        "cpu",
        "--temperature",
        "0",
        "--max-tokens",
        "40",
        "What is the capital of France?",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Paris"), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("prompt: ") && err.contains("tok/s"), "{err}");
    assert!(err.contains("eval: "), "{err}");
}

#[test]
fn bench_reports_json() {
    let out = candlelight(&[
        "bench",
        "--device",
        "cpu",
        "--prompt-tokens",
        "32",
        "--gen-tokens",
        "4",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["prompt_tokens"], 32);
    assert_eq!(r["gen_tokens"], 4);
    assert!(r["prefill_tok_s"].as_f64().unwrap() > 0.0);
    assert!(r["decode_tok_s"].as_f64().unwrap() > 0.0);
    assert!(
        r["peak_rss_mib"].as_f64().unwrap() > 50.0,
        "the model is resident"
    );
    assert_eq!(r["quantization"], "Q4_1");
    // Decode's share of the physical limit: both figures present on the CPU, and what decode
    // reads is the file's bytes per token.
    let bw = r["read_bandwidth_gb_s"].as_f64().unwrap();
    let read = r["decode_weight_gb_s"].as_f64().unwrap();
    let file = std::fs::metadata(common::test_model_path()).unwrap().len() as f64;
    assert!(bw > 0.1, "{r}");
    let expected = file * r["decode_tok_s"].as_f64().unwrap() / 1e9;
    assert!((read - expected).abs() <= 1e-6 * expected.max(1.0), "{r}");
}

#[test]
fn bad_input_gets_messages_that_say_what_to_do() {
    let out = candlelight(&["generate", "--device", "cuda", "hi"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--features cuda"),
        "{}",
        text(&out.stderr)
    );

    let out = candlelight(&["generate", "--model", "nosuch:7b", "hi"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("model 'nosuch:7b' not found"),
        "{}",
        text(&out.stderr)
    );

    // Said at once, even for a document the evidence alone would decide.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tax.json"),
        r#"{"tags": [], "correspondents": [], "document_types": []}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("doc.txt"),
        "Rechnung der Stadtwerke für Strom",
    )
    .unwrap();
    let out = candlelight(&[
        "classify",
        "--model",
        "nosuch:7b",
        "--taxonomy",
        dir.path().join("tax.json").to_str().unwrap(),
        "--file",
        dir.path().join("doc.txt").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("model 'nosuch:7b' not found"),
        "{}",
        text(&out.stderr)
    );

    let out = candlelight(&["generate", "--device", "tpu", "hi"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("use cpu, cuda, cuda:N or auto"),
        "{}",
        text(&out.stderr)
    );
}
