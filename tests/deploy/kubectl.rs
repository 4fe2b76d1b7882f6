//! Cross-check of tests/kustomize against the real kustomize, where kubectl is installed.

use std::collections::BTreeMap;

use serde_json::Value;

use super::kustomize;
use super::{deploy, files_under, render, KUSTOMIZATIONS};

/// Where kubectl is installed, its kustomize renders exactly what tests/kustomize renders.
#[test]
fn kubectl_kustomize_agrees_where_installed() {
    let ok = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("kubectl is not installed: rendering checked by tests/kustomize only");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("deploy");
    let mut files = Vec::new();
    files_under(&deploy(), &mut files);
    for f in files {
        let to = copy.join(f.strip_prefix(deploy()).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    for dir in KUSTOMIZATIONS {
        let ours = render(dir);
        for missing in &ours.from_example {
            let to = copy.join(missing.strip_prefix(deploy()).unwrap());
            std::fs::copy(format!("{}.example", missing.display()), to).unwrap();
        }
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(copy.join(dir))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = kustomize::parse_yaml(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let by_id = |rs: &[Value]| -> BTreeMap<String, Value> {
            rs.iter().map(|r| (kustomize::id(r), r.clone())).collect()
        };
        let (ours, theirs) = (by_id(&ours.resources), by_id(&theirs));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{dir}"
        );
        for (id, obj) in &ours {
            assert!(
                obj == &theirs[id],
                "{dir}: {id} differs\nours:   {obj}\nkubectl: {}",
                theirs[id]
            );
        }
    }
}
