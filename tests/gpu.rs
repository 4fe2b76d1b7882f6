//! The GPU monitor through its three outlets: GET /api/gpu, /metrics and `candlelight gpu`.
//! This machine has no GPU, so they must all say "unavailable" (and exit 0) rather than fail;
//! on a GPU machine the same test checks that they agree on the GPUs found.

mod common;

use common::Server;
use serde_json::Value;

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
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
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
