//! One source of truth for configuration: the variables the manifests set against those
//! `candlelight serve` reads, asked from clap (`Cli::command()`), never from a list kept here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use clap::{CommandFactory, Parser};
use serde_json::Value;

use candlelight::config::{Cli, Command};

use super::kustomize::Rendered;
use super::{container, deployment, ext, files_under, render, root, strs};

/// Environment variables a subcommand reads through clap, with their long flag.
pub fn clap_env(sub: &str) -> BTreeMap<String, String> {
    let cmd = Cli::command();
    let sub = cmd
        .find_subcommand(sub)
        .unwrap_or_else(|| panic!("no subcommand {sub}"));
    sub.get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            let long = a
                .get_long()
                .unwrap_or_else(|| panic!("{env} has no --flag"));
            Some((env, long.to_owned()))
        })
        .collect()
}

/// Variables the binary reads outside clap: `env::var("X")` / `env::var_os("X")` in src/.
fn src_env() -> BTreeSet<String> {
    let mut files = Vec::new();
    files_under(&root().join("src"), &mut files);
    let mut names = BTreeSet::new();
    for f in files.iter().filter(|f| ext(f) == "rs") {
        let text = std::fs::read_to_string(f).unwrap();
        for pat in ["env::var(\"", "env::var_os(\""] {
            for (i, _) in text.match_indices(pat) {
                let rest = &text[i + pat.len()..];
                names.insert(rest[..rest.find('"').unwrap()].to_owned());
            }
        }
    }
    names
}

/// Read by the NVIDIA driver and container runtime inside the pod, not by candlelight.
const DRIVER_ENV: &[&str] = &[
    "CUDA_CACHE_PATH",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
];

/// The container's environment as the kubelet builds it (envFrom, then env), secrets decoded.
fn container_env(r: &Rendered, c: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let name = from["configMapRef"]["name"]
            .as_str()
            .expect("envFrom ConfigMap only");
        let cm = r.find("ConfigMap", name).unwrap();
        for (k, v) in cm["data"].as_object().unwrap() {
            env.insert(k.clone(), v.as_str().unwrap().to_owned());
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = e.get("value") {
            v.as_str()
                .unwrap_or_else(|| panic!("env {name}: value must be a string"))
                .to_owned()
        } else {
            let key_ref = &e["valueFrom"]["secretKeyRef"];
            let secret = r.find("Secret", key_ref["name"].as_str().unwrap()).unwrap();
            let encoded = secret["data"][key_ref["key"].as_str().unwrap()].as_str();
            match encoded {
                Some(b) => {
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                        .unwrap()
                }
                None => continue,
            }
        };
        env.insert(name, value);
    }
    env
}

/// One source of truth for configuration: every ConfigMap key, Secret key and container
/// variable is one `candlelight serve` reads (clap's `env`, or a literal `env::var` in src/, or
/// the NVIDIA driver's), and the values pass the binary's own parsers and start-up checks.
#[test]
fn environment_is_what_serve_reads_with_values_it_accepts() {
    let serve = clap_env("serve");
    assert!(serve.contains_key("OLLAMA_HOST") && serve.contains_key("PAPERLESS_URL"));
    let src = src_env();
    for dir in ["base", "overlays/homelab"] {
        let r = render(dir);
        let d = deployment(r);
        let c = container(d);
        assert_eq!(
            strs(&c["args"]),
            ["serve"],
            "{dir}: the container runs `candlelight serve`"
        );
        let cm = r
            .find("ConfigMap", "candlelight-config")
            .expect("ConfigMap candlelight-config");
        for k in cm["data"].as_object().unwrap().keys() {
            assert!(
                serve.contains_key(k),
                "{dir}: ConfigMap key {k} is not an environment variable `candlelight serve` \
                 reads (clap `env` in src/config.rs)"
            );
        }
        for s in r.of_kind("Secret") {
            for k in s["data"].as_object().unwrap().keys() {
                assert!(
                    serve.contains_key(k),
                    "{dir}: Secret key {k} is not a variable serve reads"
                );
            }
        }
        let env = container_env(r, c);
        for k in env.keys() {
            assert!(
                serve.contains_key(k) || src.contains(k) || DRIVER_ENV.contains(&k.as_str()),
                "{dir}: the container sets {k}, which nothing in it reads"
            );
        }

        // The values, through clap's parsers (as flags: the process environment stays as is).
        let tmp = tempfile::tempdir().unwrap();
        let token = tmp.path().join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let mut argv = vec!["candlelight".to_owned(), "serve".to_owned()];
        for (k, v) in &env {
            if let Some(long) = serve.get(k) {
                let v = if k == "PAPERLESS_API_TOKEN_FILE" {
                    token.display().to_string()
                } else {
                    v.clone()
                };
                argv.push(format!("--{long}={v}"));
            }
        }
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{dir}: {e}"));
        let Command::Serve(args) = cli.command else {
            unreachable!()
        };
        // What serve checks before it listens.
        let addr = candlelight::config::parse_host(&args.host).unwrap();
        assert!(
            addr.ip().is_unspecified(),
            "{dir}: OLLAMA_HOST must listen beyond loopback"
        );
        assert!(
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["containerPort"] == addr.port()),
            "{dir}: OLLAMA_HOST port {} is not the container port",
            addr.port()
        );
        let settings = args
            .paperless
            .settings(&args.classify_model)
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert_eq!(settings.is_some(), env.contains_key("PAPERLESS_URL"));
        let keep_alive = Value::String(args.keep_alive.clone());
        assert!(
            candlelight::api::params::keep_alive(Some(&keep_alive)).is_ok(),
            "{dir}: OLLAMA_KEEP_ALIVE"
        );
        let store = candlelight::store::ModelStore::new(tmp.path());
        for model in std::iter::once(&args.classify_model).chain(args.preload.as_ref()) {
            candlelight::pull::check(&store, model).unwrap_or_else(|e| {
                panic!("{dir}: model {model} has no manifest to pull it from: {e}")
            });
        }
        let grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap();
        assert!(
            args.shutdown_grace < grace,
            "{dir}: CANDLELIGHT_SHUTDOWN_GRACE must end before the kubelet kills the pod"
        );

        // Paths point into the volumes that hold them.
        let pod = &d["spec"]["template"]["spec"];
        let volume = |name: &Value| {
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| &v["name"] == name)
                .unwrap()
        };
        let mount_of = |path: &str| {
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| Path::new(path).starts_with(m["mountPath"].as_str().unwrap()))
                .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
                .unwrap_or_else(|| panic!("{dir}: {path} is on no volume"))
        };
        for var in ["CANDLELIGHT_MODELS_DIR", "OLLAMA_MODELS"] {
            let m = mount_of(&env[var]);
            assert!(
                volume(&m["name"]).get("persistentVolumeClaim").is_some(),
                "{dir}: {var} is not on the models PVC"
            );
        }
        if let Some(file) = env.get("PAPERLESS_API_TOKEN_FILE") {
            let m = mount_of(file);
            let secret = &volume(&m["name"])["secret"];
            let rel = Path::new(file)
                .strip_prefix(m["mountPath"].as_str().unwrap())
                .unwrap();
            assert!(
                secret["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["path"] == rel.to_str().unwrap()),
                "{dir}: PAPERLESS_API_TOKEN_FILE names no file of the Secret volume"
            );
        }
    }
}
