//! /metrics after real requests (counters move by exactly what the responses report, and
//! promtool accepts the output), and the GPU monitor through its three outlets: GET /api/gpu,
//! /metrics and `candlelight gpu`. This machine has no GPU, so they must all say
//! "unavailable" (and exit 0) rather than fail; on a GPU machine the same test checks that
//! they agree on the GPUs found.

mod common;

use std::io::Write;

use common::Server;
use serde_json::{json, Value};

/// The value of the sample `series` (name with labels, exactly as exposed), 0 when absent.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

fn scrape(server: &Server) -> String {
    reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn counters_move_by_what_the_requests_did_and_promtool_accepts_them() {
    let _serial = common::serial();
    let server = Server::start(&[]);
    let client = reqwest::blocking::Client::new();
    let generate: Value = client
        .post(format!("{}/api/generate", server.url))
        .json(
            &json!({"model": "smollm2:135m", "prompt": "Say hi.", "stream": false,
                      "options": {"num_predict": 8, "temperature": 0}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    // Streamed, and constrained by a schema: the grammar's work shows up too.
    let chat = client
        .post(format!("{}/api/chat", server.url))
        .json(&json!({"model": "smollm2:135m", "stream": true,
                      "messages": [{"role": "user", "content": "Name a colour."}],
                      "format": {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}},
                                 "required": ["colour"]},
                      "options": {"num_predict": 16, "temperature": 0}}))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let last: Value = serde_json::from_str(chat.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true, "{chat}");
    let missing = client
        .post(format!("{}/api/generate", server.url))
        .json(&json!({"model": "nosuch:1b", "prompt": "x"}))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);

    let m = scrape(&server);
    let model = "{model=\"smollm2:135m\"}";
    let n = |k: &str, v: &Value| v[k].as_u64().unwrap() as f64;
    assert_eq!(
        value(&m, &format!("candlelight_generated_tokens_total{model}")),
        n("eval_count", &generate) + n("eval_count", &last),
        "{m}"
    );
    assert_eq!(
        value(&m, &format!("candlelight_prompt_tokens_total{model}")),
        n("prompt_eval_count", &generate) + n("prompt_eval_count", &last)
    );
    let finished: f64 = ["stop", "length"]
        .iter()
        .map(|o| {
            value(
                &m,
                &format!("candlelight_generations_total{{model=\"smollm2:135m\",outcome=\"{o}\"}}"),
            )
        })
        .sum();
    assert_eq!(finished, 2.0, "{m}");
    assert_eq!(
        value(&m, "candlelight_time_to_first_token_seconds_count"),
        2.0
    );
    assert!(value(&m, "candlelight_inter_token_seconds_count") >= 1.0);
    assert!(
        value(&m, "candlelight_constraint_forced_tokens_total") >= 1.0,
        "{m}"
    );
    assert!(value(&m, &format!("candlelight_decode_tokens_per_second{model}")) > 0.0);
    assert!(value(&m, &format!("candlelight_model_load_seconds{model}")) > 0.0);
    assert_eq!(value(&m, "candlelight_running_requests"), 0.0);
    assert_eq!(value(&m, "candlelight_admitted_requests"), 0.0);
    for (endpoint, status) in [
        ("/api/generate", 200),
        ("/api/chat", 200),
        ("/api/generate", 404),
    ] {
        let series = format!(
            "candlelight_http_requests_total{{endpoint=\"{endpoint}\",method=\"POST\",status=\"{status}\"}}"
        );
        assert_eq!(value(&m, &series), 1.0, "{series} in {m}");
    }

    let out = promtool_check(&m);
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus itself asks for OpenMetrics and gets it.
    let om = client
        .get(format!("{}/metrics", server.url))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.text().unwrap().trim_end().ends_with("# EOF"));
}

/// `promtool check metrics` (lint included) on `text`.
fn promtool_check(text: &str) -> std::process::Output {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/test-deps (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn gpu_state_is_reported_consistently_with_or_without_a_gpu() {
    let server = Server::start(&[]);
    let api: Value = reqwest::blocking::get(format!("{}/api/gpu", server.url))
        .unwrap()
        .json()
        .unwrap();
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(["gpu", "--json"])
        .output()
        .unwrap();
    common::assert_success(&cli);
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .arg("gpu")
        .output()
        .unwrap();
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout).into_owned();

    assert_eq!(api["status"], cli["status"], "{api} vs {cli}");
    match api["status"].as_str().unwrap() {
        "unavailable" => {
            assert!(api["reason"].as_str().unwrap().contains("NVML"), "{api}");
            assert!(metrics.contains("candlelight_gpu_available 0"), "{metrics}");
            assert!(!metrics.contains("candlelight_gpu_fb_used_mib{"));
            assert!(table.contains("unavailable"), "{table}");
        }
        "available" => {
            let n = api["gpus"].as_array().unwrap().len();
            assert!(n > 0);
            assert_eq!(cli["gpus"].as_array().unwrap().len(), n);
            assert!(metrics.contains("candlelight_gpu_available 1"));
            assert_eq!(metrics.matches("candlelight_gpu_fb_used_mib{").count(), n);
        }
        other => panic!("unexpected status {other}: {api}"),
    }
}

/// The Grafana dashboard only queries series this build exposes, and has what Grafana's
/// import needs (uid, title, schema version, a Prometheus datasource input, unique panel ids).
#[test]
fn grafana_dashboard_queries_existing_metrics() {
    let path = common::repo_root().join("deploy/monitoring/grafana/candlelight.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(d["uid"], "candlelight");
    assert!(d["title"].as_str().is_some() && d["schemaVersion"].as_u64().is_some());
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");

    // Every family, with samples, as a busy GPU server would expose them.
    use candlelight::metrics::{ErrorLabels, GenerationLabels, ModelLabels};
    let m = candlelight::metrics::Metrics::new();
    m.document("applied", "webhook", 4.0);
    m.paperless
        .api_errors
        .get_or_create(&ErrorLabels {
            kind: "unavailable".into(),
        })
        .inc();
    let model = ModelLabels {
        model: "llama3.2:1b".into(),
    };
    let e = &m.engine;
    e.generated_tokens.get_or_create(&model).inc();
    e.prompt_tokens.get_or_create(&model).inc();
    e.decode_tokens_per_second.get_or_create(&model).set(80.0);
    e.prefill_tokens_per_second.get_or_create(&model).set(900.0);
    e.model_load_seconds.get_or_create(&model).set(1.0);
    e.generations
        .get_or_create(&GenerationLabels {
            model: model.model.clone(),
            outcome: "stop".into(),
        })
        .inc();
    m.observe_gpu(&candlelight::gpu::GpuState::Available {
        gpus: vec![candlelight::gpu::GpuSample {
            index: 0,
            name: "NVIDIA GeForce RTX 3060".into(),
            uuid: "GPU-1".into(),
            memory_total_bytes: 12288 << 20,
            memory_used_bytes: 2048 << 20,
            memory_free_bytes: 10240 << 20,
            process_memory_bytes: Some(1800 << 20),
            utilization_gpu_percent: Some(90),
            utilization_memory_percent: Some(40),
            temperature_celsius: Some(60),
            power_watts: Some(150.0),
            sm_clock_mhz: Some(1800),
        }],
        sampled_at: String::new(),
    });
    let exposed: Vec<String> = m
        .render_text()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();

    let panels = d["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut checked = 0;
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("candlelight_"))
            {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    exposed.iter().any(|e| e == family),
                    "panel '{}' queries {name}, which /metrics does not have: {exposed:?}",
                    p["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} series checked");
}
