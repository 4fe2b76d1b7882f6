//! A small `kustomize build` for tests/deploy.rs, so the manifests are checked without the
//! kustomize binary. It implements exactly the kustomization fields deploy/ uses and refuses
//! any other (an unknown field is an error, not silently ignored):
//! `resources` (files and directories with their own kustomization), `namespace`, `labels`
//! (without includeSelectors), `images`, `patches` (strategic merge by the patch's kind and
//! name), `configMapGenerator` and `secretGenerator` (files, envs, literals; stable names only).
//! Lists in a patch merge by kustomize's keys (containers/env/volumes by name, volumeMounts by
//! mountPath, container ports by containerPort); items the patch adds come first, as kustomize
//! emits them. Other lists are replaced.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

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

const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "labels",
    "images",
    "patches",
    "configMapGenerator",
    "secretGenerator",
];

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "RuntimeClass",
    "StorageClass",
];

const WORKLOADS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
];

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Renders the kustomization in `dir`.
pub fn build(dir: &Path) -> Result<Rendered, String> {
    let kpath = dir.join("kustomization.yaml");
    let k = load_yaml(&kpath)?
        .pop()
        .ok_or_else(|| format!("{}: empty", kpath.display()))?;
    let k = k
        .as_object()
        .ok_or_else(|| format!("{}: not a mapping", kpath.display()))?;
    for key in k.keys() {
        if !FIELDS.contains(&key.as_str()) {
            return Err(format!(
                "{}: field `{key}` is not implemented by tests/kustomize (extend it, or the \
                 test would not render what kustomize renders)",
                kpath.display()
            ));
        }
    }
    if k.get("kind").and_then(Value::as_str) != Some("Kustomization") {
        return Err(format!("{}: kind is not Kustomization", kpath.display()));
    }
    let mut out = Rendered::default();
    out.files.insert(kpath.clone());

    for r in strs(k.get("resources").unwrap_or(&Value::Null)) {
        let path = dir.join(&r);
        if path.is_dir() {
            let sub = build(&path)?;
            out.resources.extend(sub.resources);
            out.files.extend(sub.files);
            out.from_example.extend(sub.from_example);
        } else if path.is_file() {
            out.files.insert(path.clone());
            out.resources.extend(load_yaml(&path)?);
        } else {
            return Err(format!("{}: resource {r} does not exist", kpath.display()));
        }
    }
    for (field, kind) in [
        ("configMapGenerator", "ConfigMap"),
        ("secretGenerator", "Secret"),
    ] {
        for g in k.get(field).and_then(Value::as_array).into_iter().flatten() {
            let generated = generate(dir, kind, g, &mut out)?;
            out.resources.push(generated);
        }
    }
    for p in k
        .get("patches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rel = p["path"].as_str().ok_or_else(|| {
            format!(
                "{}: only `patches: - path:` is implemented",
                kpath.display()
            )
        })?;
        if p.get("target").is_some() || p.get("patch").is_some() {
            return Err(format!(
                "{}: patch targets/inline patches are not implemented",
                kpath.display()
            ));
        }
        let path = dir.join(rel);
        if !path.is_file() {
            return Err(format!("{}: patch {rel} does not exist", kpath.display()));
        }
        out.files.insert(path.clone());
        for patch in load_yaml(&path)? {
            let (kind, name) = (&patch["kind"], &patch["metadata"]["name"]);
            let mut targets = out
                .resources
                .iter_mut()
                .filter(|r| &r["kind"] == kind && &r["metadata"]["name"] == name);
            let target = targets
                .next()
                .ok_or_else(|| format!("{rel}: patch target {kind} {name} not found"))?;
            merge(target, &patch, "")?;
            if targets.next().is_some() {
                return Err(format!("{rel}: patch target {kind} {name} is ambiguous"));
            }
        }
    }
    if let Some(ns) = k.get("namespace").and_then(Value::as_str) {
        for r in &mut out.resources {
            if !CLUSTER_SCOPED.contains(&r["kind"].as_str().unwrap_or("")) {
                r["metadata"]["namespace"] = Value::from(ns);
            }
        }
    }
    for l in k
        .get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if l.get("includeSelectors").and_then(Value::as_bool) == Some(true) {
            return Err(format!(
                "{}: labels.includeSelectors is not implemented",
                kpath.display()
            ));
        }
        let templates = l.get("includeTemplates").and_then(Value::as_bool) == Some(true);
        let pairs = l["pairs"].as_object().cloned().unwrap_or_default();
        for r in &mut out.resources {
            add_labels(&mut r["metadata"], &pairs);
            if templates && WORKLOADS.contains(&r["kind"].as_str().unwrap_or("")) {
                add_labels(&mut r["spec"]["template"]["metadata"], &pairs);
            }
        }
    }
    for i in k
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for r in &mut out.resources {
            for list in ["containers", "initContainers"] {
                // pointer_mut, not indexing: IndexMut would add the missing fields as nulls.
                let path = format!("/spec/template/spec/{list}");
                let Some(cs) = r.pointer_mut(&path).and_then(Value::as_array_mut) else {
                    continue;
                };
                for c in cs {
                    let image = c["image"].as_str().unwrap_or("").to_owned();
                    let (name, tag) = image.rsplit_once(':').unwrap_or((&image, ""));
                    if i["name"] != name {
                        continue;
                    }
                    let name = i["newName"].as_str().unwrap_or(name);
                    let tag = i["newTag"].as_str().unwrap_or(tag);
                    c["image"] = Value::from(if tag.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{name}:{tag}")
                    });
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for r in &out.resources {
        if !seen.insert(id(r)) {
            return Err(format!("{}: {} is defined twice", kpath.display(), id(r)));
        }
    }
    Ok(out)
}

fn add_labels(meta: &mut Value, pairs: &Map<String, Value>) {
    if !meta["labels"].is_object() {
        meta["labels"] = Value::Object(Map::new());
    }
    for (k, v) in pairs {
        meta["labels"][k] = v.clone();
    }
}

/// A ConfigMap or Secret from a generator entry (files, envs, literals; options).
fn generate(dir: &Path, kind: &str, g: &Value, out: &mut Rendered) -> Result<Value, String> {
    let name = g["name"]
        .as_str()
        .ok_or("a generator without a name")?
        .to_owned();
    let options = &g["options"];
    if options["disableNameSuffixHash"] != true {
        return Err(format!(
            "{kind} generator {name}: name hash suffixes are not implemented (and deploy/ keeps \
             stable names): set options.disableNameSuffixHash: true"
        ));
    }
    let mut data = Map::new();
    let mut read = |rel: &str| -> Result<String, String> {
        let path = dir.join(rel);
        let path = if path.is_file() {
            path
        } else {
            let example = PathBuf::from(format!("{}.example", path.display()));
            if !example.is_file() {
                return Err(format!("{kind} generator {name}: {rel} does not exist"));
            }
            out.from_example.push(path);
            example
        };
        out.files.insert(path.clone());
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    for f in strs(&g["files"]) {
        let (key, rel) = f.split_once('=').unwrap_or_else(|| {
            (
                Path::new(&f)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(&f),
                &f,
            )
        });
        data.insert(key.to_owned(), Value::from(read(rel)?));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for e in strs(&g["envs"]) {
        for line in read(&e)?.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{e}: `{line}` is not KEY=value"))?;
            pairs.push((k.trim().to_owned(), v.to_owned()));
        }
    }
    for l in strs(&g["literals"]) {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("literal `{l}` is not KEY=value"))?;
        pairs.push((k.to_owned(), v.to_owned()));
    }
    for (k, v) in pairs {
        data.insert(k, Value::from(v));
    }
    if kind == "Secret" {
        for v in data.values_mut() {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
            *v = Value::from(encoded);
        }
    }
    let mut meta = Map::new();
    meta.insert("name".into(), Value::from(name));
    for field in ["labels", "annotations"] {
        if let Some(m) = options[field].as_object() {
            meta.insert(field.into(), Value::Object(m.clone()));
        }
    }
    let mut r = Map::new();
    r.insert("apiVersion".into(), Value::from("v1"));
    r.insert("kind".into(), Value::from(kind));
    r.insert("metadata".into(), Value::Object(meta));
    r.insert("data".into(), Value::Object(data));
    if kind == "Secret" {
        r.insert("type".into(), Value::from("Opaque"));
    }
    Ok(Value::Object(r))
}

/// The strategic-merge key of a list field, as Kubernetes' API types declare it.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" if items.iter().all(|i| i.get("containerPort").is_some()) => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Strategic merge of `patch` into `base` (maps merged, null deletes, keyed lists merged).
pub fn merge(base: &mut Value, patch: &Value, field: &str) -> Result<(), String> {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if k.starts_with('$') {
                    return Err(format!("patch directive {k} is not implemented"));
                }
                match (b.get_mut(k), v) {
                    (_, Value::Null) => {
                        b.remove(k);
                    }
                    (Some(bv), _) => merge(bv, v, k)?,
                    (None, _) => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) => {
            let all: Vec<Value> = b.iter().chain(p).cloned().collect();
            let Some(key) = merge_key(field, &all) else {
                *b = p.clone();
                return Ok(());
            };
            let mut merged: Vec<Value> = p
                .iter()
                .filter(|pi| !b.iter().any(|bi| bi[key] == pi[key]))
                .cloned()
                .collect();
            for bi in b.iter() {
                let mut item = bi.clone();
                if let Some(pi) = p.iter().find(|pi| pi[key] == bi[key]) {
                    merge(&mut item, pi, "")?;
                }
                merged.push(item);
            }
            *b = merged;
        }
        (b, p) => *b = p.clone(),
    }
    Ok(())
}
