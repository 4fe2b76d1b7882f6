//! The Dockerfiles, read as text (no Docker here): what the manifests rely on is in them.

use super::{container, deployment, homelab, root};

/// Instructions of a Dockerfile's last stage and the whole file, continuation lines joined.
fn dockerfile(name: &str) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(root().join(name)).unwrap();
    let mut all = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let l = line.trim();
        if cur.is_empty() && (l.is_empty() || l.starts_with('#')) {
            continue;
        }
        if let Some(part) = l.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
        } else {
            cur.push_str(l);
            all.push(std::mem::take(&mut cur));
        }
    }
    let last_from = all.iter().rposition(|i| i.starts_with("FROM ")).unwrap();
    (all[last_from..].to_vec(), all)
}

#[test]
fn dockerfiles_build_what_the_manifests_run() {
    let d = deployment(homelab());
    let uid = d["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        .as_u64()
        .unwrap();
    for (name, cuda) in [("Dockerfile.cuda", true), ("Dockerfile", false)] {
        let (runtime, all) = dockerfile(name);
        let has = |set: &[String], s: &str| set.iter().any(|i| i.contains(s));
        assert!(
            has(&runtime, &format!("USER {uid}:{uid}")),
            "{name}: non-root USER {uid}, as the pod"
        );
        assert!(has(&runtime, "EXPOSE 11434"), "{name}");
        assert!(
            has(&runtime, "HEALTHCHECK") && has(&runtime, "http://127.0.0.1:11434/"),
            "{name}: HEALTHCHECK on /"
        );
        assert!(has(&runtime, "OLLAMA_HOST=0.0.0.0:11434"), "{name}");
        assert!(
            has(&runtime, "CANDLELIGHT_MODELS_DIR=/models")
                && has(&runtime, "VOLUME [\"/models\"]"),
            "{name}"
        );
        assert!(
            has(&runtime, "ENTRYPOINT [\"candlelight\"]") && has(&runtime, "CMD [\"serve\"]"),
            "{name}"
        );
        assert!(
            !all.iter().any(|i| i.contains(".gguf")),
            "{name}: the model is not baked in"
        );
        assert!(
            has(&all, "ARG TARGET_CPU=x86-64-v2") && has(&all, "-C target-cpu=${TARGET_CPU}"),
            "{name}: runs on x86-64-v2 hosts"
        );
        assert!(has(&all, "cargo build --release --locked"), "{name}");
        assert_eq!(
            has(&all, "--features cuda"),
            cuda,
            "{name}: --features cuda only in the CUDA image"
        );
        if cuda {
            assert!(
                has(&all, "ARG CUDA_COMPUTE_CAP=86")
                    && has(&all, "CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}"),
                "{name}: sm_86 by build-arg"
            );
            // Both stages on the same CUDA version: one ARG feeds devel and runtime.
            let froms: Vec<&String> = all
                .iter()
                .filter(|i| i.starts_with("FROM nvidia/cuda:"))
                .collect();
            assert_eq!(froms.len(), 2, "{name}: builder and runtime on nvidia/cuda");
            assert!(
                froms[0].contains("${CUDA_VERSION}-devel-${UBUNTU_VERSION}"),
                "{}",
                froms[0]
            );
            assert!(
                froms[1].contains("${CUDA_VERSION}-runtime-${UBUNTU_VERSION}"),
                "{}",
                froms[1]
            );
            let version = all
                .iter()
                .find_map(|i| i.strip_prefix("ARG CUDA_VERSION="))
                .expect("ARG CUDA_VERSION");
            let image = container(d)["image"].as_str().unwrap();
            assert!(
                image.ends_with(&format!("cuda{version}")),
                "the overlay's tag {image} names CUDA {version}"
            );
        }
    }
}
