//! The deployment (deploy/, Dockerfile, Dockerfile.cuda) checked against itself and against the
//! binary: every manifest parses, every kustomize reference resolves, the rendered objects refer
//! to each other correctly, and every environment variable the manifests set is one
//! `candlelight serve` reads, with a value its own parsers accept (taken from clap's
//! `CommandFactory`, not from a list kept here). Rendered by the real kustomize
//! (`kubectl kustomize`; scripts/test-deps checks it is there).

#[path = "deploy/env.rs"]
mod env;
#[path = "deploy/images.rs"]
mod images;
mod kustomize;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use env::clap_env;
use kustomize::Rendered;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

/// Every kustomization root under deploy/.
const KUSTOMIZATIONS: &[&str] = &["base", "monitoring", "overlays/homelab"];

fn render(dir: &str) -> &'static Rendered {
    static CACHE: OnceLock<BTreeMap<&'static str, Rendered>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        KUSTOMIZATIONS
            .iter()
            .map(|d| {
                let r = kustomize::build(&deploy(), d).unwrap_or_else(|e| panic!("{d}: {e}"));
                (*d, r)
            })
            .collect()
    });
    &all[dir]
}

fn homelab() -> &'static Rendered {
    render("overlays/homelab")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn ext(p: &Path) -> &str {
    p.extension().and_then(|e| e.to_str()).unwrap_or("")
}

fn deployment(r: &Rendered) -> &Value {
    let d: Vec<&Value> = r.of_kind("Deployment").collect();
    assert_eq!(d.len(), 1, "one Deployment");
    d[0]
}

fn container(d: &Value) -> &Value {
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 1, "one container");
    &cs[0]
}

fn subset(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().unwrap();
    !sel.is_empty() && sel.iter().all(|(k, v)| labels[k] == *v)
}

#[test]
fn every_manifest_parses_and_kubernetes_reads_scalars_as_written() {
    let mut files = Vec::new();
    files_under(&deploy(), &mut files);
    let yaml: Vec<&PathBuf> = files
        .iter()
        .filter(|f| matches!(ext(f), "yaml" | "yml"))
        .collect();
    assert!(yaml.len() >= 10, "deploy/ has its manifests: {yaml:?}");
    for f in yaml {
        let docs = kustomize::load_yaml(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!docs.is_empty(), "{}: no document", f.display());
        for d in &docs {
            for field in ["apiVersion", "kind"] {
                assert!(d[field].is_string(), "{}: no {field}", f.display());
            }
            if d["kind"] != "Kustomization" {
                assert!(
                    d["metadata"]["name"].is_string(),
                    "{}: no metadata.name",
                    f.display()
                );
            }
            if d["kind"] == "ConfigMap" {
                for (k, v) in d["data"].as_object().into_iter().flatten() {
                    assert!(
                        v.is_string(),
                        "{}: ConfigMap value {k} must be a string",
                        f.display()
                    );
                }
            }
        }
        // kubectl's YAML is 1.1: an unquoted yes/no/on/off is a boolean there (a string for
        // this test's YAML 1.2 parser), which a ConfigMap or a label rejects.
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let code = line.split(" #").next().unwrap();
            if let Some((_, value)) = code.split_once(": ") {
                let v = value.trim().to_ascii_lowercase();
                assert!(
                    !matches!(v.as_str(), "yes" | "no" | "on" | "off" | "y" | "n"),
                    "{}:{}: quote `{}` (YAML 1.1 reads it as a boolean)",
                    f.display(),
                    n + 1,
                    value.trim()
                );
            }
        }
    }
    let dashboard = deploy().join("monitoring/grafana/candlelight.json");
    serde_json::from_str::<Value>(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
}

/// Every file a kustomization lists exists (rendering fails otherwise), and every manifest in
/// a kustomization's folder is used by it: nothing is left out of `kubectl apply -k`.
#[test]
fn kustomizations_resolve_and_leave_no_file_out() {
    for dir in KUSTOMIZATIONS {
        let r = render(dir);
        assert!(!r.resources.is_empty(), "{dir} renders nothing");
        let mut files = Vec::new();
        files_under(&deploy().join(dir), &mut files);
        for f in files {
            let is_input = matches!(ext(&f), "yaml" | "yml" | "json" | "env")
                || f.to_string_lossy().ends_with(".env.example");
            let in_sub_kustomization = f
                .parent()
                .is_some_and(|p| p != deploy().join(dir) && p.join("kustomization.yaml").exists());
            if !is_input || in_sub_kustomization {
                continue;
            }
            // An `.example` counts as used when the generator read it, or read the real file
            // (the git-ignored Secret values) that it is the template of.
            let real = f
                .to_string_lossy()
                .strip_suffix(".example")
                .map(PathBuf::from);
            let used = r.files.contains(&f) || real.is_some_and(|p| r.files.contains(&p));
            assert!(
                used,
                "{} is in {dir}/ but not in its kustomization",
                f.display()
            );
        }
    }
}

/// What the Deployment names (ConfigMaps, Secrets, the PVC, the ServiceAccount, secret keys)
/// exists in the same rendering and namespace; Service, ServiceMonitor and NetworkPolicy point
/// at the Deployment's pods and port.
#[test]
fn rendered_objects_refer_to_each_other() {
    for dir in ["base", "overlays/homelab"] {
        let r = render(dir);
        let d = deployment(r);
        let ns = &d["metadata"]["namespace"];
        let exists = |kind: &str, name: &Value| {
            let name = name
                .as_str()
                .unwrap_or_else(|| panic!("{dir}: a {kind} reference without name"));
            let found = r
                .find(kind, name)
                .unwrap_or_else(|| panic!("{dir}: {kind} {name} is referenced but not rendered"));
            assert_eq!(
                &found["metadata"]["namespace"], ns,
                "{dir}: {kind} {name} in another namespace"
            );
            found
        };
        let pod = &d["spec"]["template"]["spec"];
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            subset(&d["spec"]["selector"]["matchLabels"], labels),
            "{dir}: Deployment selector"
        );
        if let Some(sa) = pod.get("serviceAccountName") {
            exists("ServiceAccount", sa);
        }
        let c = container(d);
        for from in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(cm) = from.get("configMapRef") {
                exists("ConfigMap", &cm["name"]);
            }
            if let Some(s) = from.get("secretRef") {
                exists("Secret", &s["name"]);
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            for (kind, field) in [("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")] {
                let key_ref = &e["valueFrom"][field];
                if key_ref.is_object() {
                    let obj = exists(kind, &key_ref["name"]);
                    let key = key_ref["key"].as_str().unwrap();
                    assert!(
                        obj["data"].get(key).is_some() || key_ref["optional"] == true,
                        "{dir}: {kind} {} has no key {key}",
                        key_ref["name"]
                    );
                }
            }
        }
        let mut volumes = BTreeMap::new();
        for v in pod["volumes"].as_array().into_iter().flatten() {
            volumes.insert(v["name"].as_str().unwrap(), v);
            if let Some(pvc) = v.get("persistentVolumeClaim") {
                exists("PersistentVolumeClaim", &pvc["claimName"]);
            }
            if let Some(cm) = v.get("configMap") {
                exists("ConfigMap", &cm["name"]);
            }
            if let Some(s) = v.get("secret") {
                let secret = exists("Secret", &s["secretName"]);
                for item in s["items"].as_array().into_iter().flatten() {
                    let key = item["key"].as_str().unwrap();
                    assert!(
                        secret["data"].get(key).is_some(),
                        "{dir}: Secret has no key {key}"
                    );
                }
            }
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            assert!(
                volumes.contains_key(m["name"].as_str().unwrap()),
                "{dir}: mount of unknown volume {}",
                m["name"]
            );
        }
        let ports: Vec<&Value> = c["ports"].as_array().unwrap().iter().collect();
        let port_matches = |target: &Value| {
            ports
                .iter()
                .any(|p| &p["name"] == target || &p["containerPort"] == target)
        };
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let get = &c[probe]["httpGet"];
            assert_eq!(
                get["path"], "/",
                "{dir}: {probe} on / (\"Ollama is running\")"
            );
            assert!(port_matches(&get["port"]), "{dir}: {probe} port");
        }

        let services: Vec<&Value> = r.of_kind("Service").collect();
        assert_eq!(services.len(), 1, "{dir}: one Service");
        let svc = services[0];
        assert_eq!(&svc["metadata"]["namespace"], ns);
        assert!(
            subset(&svc["spec"]["selector"], labels),
            "{dir}: Service selector does not match the pods"
        );
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert!(
                port_matches(&p["targetPort"]),
                "{dir}: Service targetPort {} is no container port",
                p["targetPort"]
            );
        }

        for np in r.of_kind("NetworkPolicy") {
            assert!(
                subset(&np["spec"]["podSelector"]["matchLabels"], labels),
                "{dir}: NetworkPolicy selects other pods"
            );
            for rule in np["spec"]["ingress"].as_array().unwrap() {
                for p in rule["ports"].as_array().unwrap() {
                    assert!(
                        port_matches(&p["port"]),
                        "{dir}: NetworkPolicy port {} is no container port",
                        p["port"]
                    );
                }
            }
        }
        for sm in r.of_kind("ServiceMonitor") {
            assert!(
                subset(
                    &sm["spec"]["selector"]["matchLabels"],
                    &svc["metadata"]["labels"]
                ),
                "{dir}: ServiceMonitor selects no Service"
            );
            assert!(strs(&sm["spec"]["namespaceSelector"]["matchNames"])
                .contains(&ns.as_str().unwrap().to_owned()));
            for ep in sm["spec"]["endpoints"].as_array().unwrap() {
                assert!(
                    svc["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == ep["port"]),
                    "{dir}: ServiceMonitor port {}",
                    ep["port"]
                );
                assert_eq!(ep["path"], "/metrics");
            }
        }
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// The shape of the home lab: Service `ollama` in `ml` on 11434 (the URL the Paperless
/// hook and every client use), one GPU pod on the RTX 3060 worker, locked down, labelled.
#[test]
fn homelab_replaces_ollama_on_the_gpu_worker() {
    let r = homelab();
    let svc = r.find("Service", "ollama").expect("Service ollama");
    assert_eq!(svc["metadata"]["namespace"], "ml");
    assert_eq!(svc["spec"]["ports"][0]["port"], 11434);
    let url = "http://ollama.ml.svc:11434";
    for doc in [
        "deploy/paperless/post-consume.sh",
        "README.md",
        "deploy/README.md",
    ] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        assert!(text.contains(url), "{doc} should use {url}");
    }

    let d = deployment(r);
    assert_eq!(d["metadata"]["name"], "candlelight");
    assert_eq!(d["metadata"]["namespace"], "ml");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["strategy"]["type"], "Recreate",
        "one GPU, one RWO volume"
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["runtimeClassName"], "nvidia");
    assert!(
        !pod["nodeSelector"].as_object().unwrap().is_empty(),
        "pinned to the GPU worker"
    );
    assert!(pod["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "nvidia.com/gpu"));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = container(d);
    let res = &c["resources"];
    assert_eq!(res["limits"]["nvidia.com/gpu"], 1);
    for (kind, what) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(res[kind][what].is_string(), "resources.{kind}.{what}");
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let image = c["image"].as_str().unwrap();
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    assert!(
        tag != "latest" && tag.contains("cuda"),
        "a pinned CUDA image, got {image}"
    );

    let cm = &r.find("ConfigMap", "candlelight-config").unwrap()["data"];
    assert_eq!(cm["CANDLELIGHT_DEVICE"], "cuda");
    assert_eq!(cm["OLLAMA_MODEL"], "llama3.2:1b");
    assert!(cm["OLLAMA_CONTEXT_LENGTH"].is_string());
    assert!(cm["PAPERLESS_URL"].as_str().unwrap().starts_with("http://"));

    for res in &r.resources {
        let labels = &res["metadata"]["labels"];
        for (k, v) in [
            ("app.kubernetes.io/name", "candlelight"),
            ("app.kubernetes.io/instance", "candlelight"),
            ("app.kubernetes.io/part-of", "home-lab"),
            ("app.kubernetes.io/managed-by", "kustomize"),
        ] {
            assert_eq!(labels[k], v, "{}: label {k}", kustomize::id(res));
            assert_eq!(
                d["spec"]["template"]["metadata"]["labels"][k], v,
                "pod label {k}"
            );
        }
    }

    // Ingress on 11434 from ml itself, docs (Paperless) and monitoring (Prometheus) only.
    let np = r
        .find("NetworkPolicy", "candlelight")
        .expect("NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = np["spec"]["ingress"].as_array().unwrap();
    let mut namespaces = BTreeSet::new();
    for rule in rules {
        assert!(
            !rule["ports"].as_array().unwrap().is_empty(),
            "every rule names its port"
        );
        for from in rule["from"].as_array().unwrap() {
            if from["podSelector"] == serde_json::json!({})
                && from.get("namespaceSelector").is_none()
            {
                namespaces.insert("ml".to_owned());
            } else {
                let ns = from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    .as_str();
                namespaces.insert(ns.expect("from: a namespace by name").to_owned());
            }
        }
    }
    assert_eq!(
        namespaces,
        BTreeSet::from(["docs", "ml", "monitoring"].map(String::from))
    );

    let pvc = r
        .find("PersistentVolumeClaim", "candlelight-models")
        .expect("PVC");
    assert!(pvc["spec"]["resources"]["requests"]["storage"].is_string());
}

/// The Grafana dashboard is the committed JSON, as a ConfigMap the Grafana sidecar loads.
#[test]
fn dashboard_configmap_is_the_dashboard() {
    let r = homelab();
    let cm = r
        .find("ConfigMap", "candlelight-dashboard")
        .expect("dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = cm["data"].as_object().unwrap();
    assert_eq!(data.len(), 1);
    let (key, json) = data.iter().next().unwrap();
    assert!(key.ends_with(".json"));
    let file = deploy().join("monitoring/grafana/candlelight.json");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let got: Value = serde_json::from_str(json.as_str().unwrap()).unwrap();
    assert_eq!(got, expected);
    assert_eq!(got["uid"], "candlelight");
    assert!(r.find("ServiceMonitor", "candlelight").is_some());
}

/// The Paperless token is never committed: the kustomization reads a git-ignored env file
/// whose committed `.example` holds placeholders only.
#[test]
fn paperless_secret_is_a_template_not_a_value() {
    let dir = deploy().join("overlays/homelab");
    let example = std::fs::read_to_string(dir.join("paperless-ai-secrets.env.example")).unwrap();
    let serve = clap_env("serve");
    let mut keys = BTreeSet::new();
    for line in example
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line.split_once('=').unwrap();
        assert!(serve.contains_key(k), "{k} is not a variable serve reads");
        assert!(
            v.starts_with("replace-"),
            "{k}: the example holds a placeholder, not a value"
        );
        keys.insert(k);
    }
    assert!(keys.contains("PAPERLESS_API_TOKEN"));
    let real = dir.join("paperless-ai-secrets.env");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .arg(&real)
            .current_dir(root())
            .output()
            .expect("git")
            .status
            .success()
    };
    assert!(
        git(&["check-ignore", "-q"]),
        "{} must be git-ignored",
        real.display()
    );
    assert!(
        !git(&["ls-files", "--error-unmatch"]),
        "{} is committed",
        real.display()
    );
    if let Ok(text) = std::fs::read_to_string(&real) {
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            assert!(
                !v.trim().is_empty(),
                "{}: {k} is empty (an empty token or URL means none: delete the line \
                 instead, so the intent is visible)",
                real.display()
            );
        }
    }
    assert!(homelab().find("Secret", "paperless-ai-secrets").is_some());
}
