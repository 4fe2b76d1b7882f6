//! `kustomize build` for tests/deploy.rs, by the real kustomize (`kubectl kustomize`, which
//! scripts/test-deps checks for): the manifests are rendered exactly as `kubectl apply -k`
//! renders them. Beside the rendering, the files each kustomization reads (its resources,
//! patches and generator inputs), so a test can tell that no manifest is left out; and the
//! git-ignored Secret inputs that are rendered from their `.example` instead.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// What a kustomization renders to, and which files it read.
#[derive(Debug, Default)]
pub struct Rendered {
    pub resources: Vec<Value>,
    /// Every file the tree read (resources, patches, generator inputs, kustomization.yaml).
    pub files: BTreeSet<PathBuf>,
    /// Generator inputs that are absent and were read from `<file>.example` instead (the
    /// git-ignored Secret values).
    pub from_example: Vec<PathBuf>,
}

impl Rendered {
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.resources
            .iter()
            .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.resources.iter().filter(move |r| r["kind"] == kind)
    }
}

/// `kind/namespace/name`, unique within a rendering.
pub fn id(r: &Value) -> String {
    format!(
        "{}/{}/{}",
        r["kind"].as_str().unwrap_or("?"),
        r["metadata"]["namespace"].as_str().unwrap_or(""),
        r["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// All YAML documents of a file (empty documents skipped), as JSON values.
pub fn load_yaml(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// All YAML documents of a text (empty documents skipped).
pub fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The files the kustomization in `dir` reads, recursively; absent generator inputs are
/// recorded in `from_example` when their `.example` exists.
fn inputs(dir: &Path, out: &mut Rendered) -> Result<(), String> {
    let kpath = dir.join("kustomization.yaml");
    let k = load_yaml(&kpath)?
        .pop()
        .ok_or_else(|| format!("{}: empty", kpath.display()))?;
    out.files.insert(kpath.clone());
    for r in strs(&k["resources"]) {
        let path = dir.join(&r);
        if path.is_dir() {
            inputs(&path, out)?;
        } else {
            out.files.insert(path);
        }
    }
    for p in k["patches"].as_array().into_iter().flatten() {
        if let Some(rel) = p["path"].as_str() {
            out.files.insert(dir.join(rel));
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for g in k[field].as_array().into_iter().flatten() {
            let files = strs(&g["files"])
                .into_iter()
                .map(|f| match f.split_once('=') {
                    Some((_, rel)) => rel.to_owned(),
                    None => f,
                });
            for rel in files.chain(strs(&g["envs"])) {
                let path = dir.join(rel);
                let example = PathBuf::from(format!("{}.example", path.display()));
                if !path.is_file() && example.is_file() {
                    out.from_example.push(path.clone());
                    out.files.insert(example);
                }
                out.files.insert(path);
            }
        }
    }
    Ok(())
}

/// Renders `deploy_root/<dir>` with the real kustomize, on a copy of the tree in which the
/// absent Secret inputs are their `.example` files (what a user fills in before applying).
pub fn build(deploy_root: &Path, dir: &str) -> Result<Rendered, String> {
    let mut out = Rendered::default();
    inputs(&deploy_root.join(dir), &mut out)?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    copy_tree(deploy_root, tmp.path())?;
    for missing in &out.from_example {
        let rel = missing
            .strip_prefix(deploy_root)
            .map_err(|e| e.to_string())?;
        std::fs::copy(
            format!("{}.example", missing.display()),
            tmp.path().join(rel),
        )
        .map_err(|e| e.to_string())?;
    }
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(tmp.path().join(dir))
        .output()
        .map_err(|e| {
            format!("kubectl is not runnable ({e}): run scripts/test-deps, which checks for it")
        })?;
    if !rendered.status.success() {
        return Err(format!(
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        ));
    }
    out.resources = parse_yaml(&String::from_utf8_lossy(&rendered.stdout))?;
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for e in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        let target = to.join(p.file_name().unwrap_or_default());
        if p.is_dir() {
            copy_tree(&p, &target)?;
        } else {
            std::fs::copy(&p, &target).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
