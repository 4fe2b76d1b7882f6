//! Models made by `/api/create`: an existing model, or an uploaded blob, under a new name with
//! its own defaults (system prompt, template, parameters, opening messages); and the blobs
//! themselves, which live in `cache/blobs/` under their sha256 and nowhere else.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::names::{is_sha256_hex, split_name};
use super::{io_err, is_model_file, parse_name, write_new, write_replace, Location, Manifest};
use super::{ModelStore, StoreError};

/// What a created model adds to every request (the request's own values win).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// A Go-style prompt template (the subset `/api/generate`'s `template` accepts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Ollama options (`temperature`, `num_ctx`, `stop`, …) as a request's `options`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub options: Map<String, Value>,
    /// Turns placed before every conversation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<DefaultMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultMessage {
    pub role: String,
    pub content: String,
}

impl ModelDefaults {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// These defaults on top of `base`'s (a model created from a created model keeps what it
    /// does not change).
    pub fn over(mut self, base: &ModelDefaults) -> ModelDefaults {
        let mut options = base.options.clone();
        options.extend(std::mem::take(&mut self.options));
        ModelDefaults {
            system: self.system.or_else(|| base.system.clone()),
            template: self.template.or_else(|| base.template.clone()),
            options,
            messages: if self.messages.is_empty() {
                base.messages.clone()
            } else {
                self.messages
            },
        }
    }
}

/// What a created model is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateFrom {
    /// A model the store resolves by name.
    Model(String),
    /// An uploaded blob, by its sha256 (hex).
    Blob(String),
}

/// A blob digest as the API spells it: `sha256:<hex>` (or `sha256-<hex>`), lower-cased.
pub fn blob_hex(digest: &str) -> Option<String> {
    let hex = digest
        .strip_prefix("sha256:")
        .or_else(|| digest.strip_prefix("sha256-"))?;
    is_sha256_hex(hex).then(|| hex.to_ascii_lowercase())
}

impl ModelStore {
    fn blob_dir(&self) -> PathBuf {
        self.cache_dir.join("blobs")
    }

    /// Where the blob `hex` lives (whether or not it has been uploaded).
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.blob_dir().join(format!("sha256-{hex}"))
    }

    pub fn has_blob(&self, hex: &str) -> bool {
        is_sha256_hex(hex) && self.blob_path(hex).is_file()
    }

    /// A fresh file to upload the blob `hex` into (then [`ModelStore::commit_blob`]).
    pub fn blob_upload_path(&self, hex: &str) -> Result<PathBuf, StoreError> {
        let dir = self.blob_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(dir.join(format!(".upload-{hex}-{}-{n}", std::process::id())))
    }

    /// Moves a finished, verified upload to its place (an existing copy is kept).
    pub fn commit_blob(&self, upload: &std::path::Path, hex: &str) -> Result<(), StoreError> {
        let dest = self.blob_path(hex);
        if dest.is_file() {
            let _ = std::fs::remove_file(upload);
            return Ok(());
        }
        std::fs::rename(upload, &dest).map_err(|e| io_err(&dest, e))
    }

    /// The defaults a model name carries (none for configured paths and Ollama's models).
    pub fn defaults(&self, model: &str) -> ModelDefaults {
        parse_name(model)
            .ok()
            .and_then(|c| self.find_entry(&c).ok().flatten())
            .map(|e| e.manifest.defaults)
            .unwrap_or_default()
    }

    /// Makes `dest` a model: `from`'s file with `defaults` (on top of `from`'s own). A name
    /// made by copy or create before is replaced, as Ollama's create does; built-in models and
    /// Ollama's are never replaced.
    pub fn create(
        &self,
        dest: &str,
        from: &CreateFrom,
        defaults: ModelDefaults,
    ) -> Result<(), StoreError> {
        self.write_name(dest, from, defaults, true)
    }

    /// A new manifest naming `from`'s file. `replace_own`: a name this store wrote before
    /// (copy or create) may be replaced; otherwise any existing name is a conflict.
    pub(super) fn write_name(
        &self,
        dest: &str,
        from: &CreateFrom,
        defaults: ModelDefaults,
        replace_own: bool,
    ) -> Result<(), StoreError> {
        let dest = parse_name(dest)?;
        if dest.contains('/') {
            return Err(StoreError::BadName(dest));
        }
        let (file, ollama_blob, sha256, defaults) = match from {
            CreateFrom::Blob(hex) => {
                if !self.has_blob(hex) {
                    return Err(StoreError::NotFound(format!("sha256:{hex}")));
                }
                (
                    format!("blobs/sha256-{hex}"),
                    None,
                    Some(hex.clone()),
                    defaults,
                )
            }
            CreateFrom::Model(source) => {
                if self.paths.iter().any(|p| p.as_os_str() == source.as_str()) {
                    return Err(StoreError::NotInStore(source.clone()));
                }
                let src = parse_name(source)?;
                match self.find_entry(&src)? {
                    Some(e) if is_model_file(e.location.path()) => {
                        let defaults = defaults.over(&e.manifest.defaults);
                        match &e.location {
                            Location::Cache(_) => (
                                e.manifest.file.clone(),
                                None,
                                e.manifest.sha256.clone(),
                                defaults,
                            ),
                            Location::Ollama(_, hex) => (
                                String::new(),
                                Some(hex.clone()),
                                Some(hex.clone()),
                                defaults,
                            ),
                        }
                    }
                    _ => match self.ollama_model(&src) {
                        Some((_, _, hex)) => {
                            (String::new(), Some(hex.clone()), Some(hex), defaults)
                        }
                        None => return Err(StoreError::NotFound(source.clone())),
                    },
                }
            }
        };
        let (name, tag) = split_name(&dest);
        let path = self.manifest_dir.join(format!("{name}@{tag}.toml"));
        // '@' cannot occur in a name, so no two names share a manifest file.
        let replace = match self.find_entry(&dest)? {
            // Only a name this store wrote for a user (copy or create) is replaced.
            Some(e) if replace_own && e.origin.as_deref() == Some(path.as_path()) => true,
            Some(_) => return Err(StoreError::Exists(dest)),
            None if self.ollama_model(&dest).is_some() => return Err(StoreError::Exists(dest)),
            None => false,
        };
        let manifest = Manifest {
            name: name.to_owned(),
            tags: vec![tag.to_owned()],
            file,
            ollama_blob,
            sha256,
            source: None,
            defaults,
        };
        let text = toml::to_string(&manifest).map_err(|e| StoreError::BadManifest {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        std::fs::create_dir_all(&self.manifest_dir).map_err(|e| io_err(&self.manifest_dir, e))?;
        if replace {
            return write_replace(&path, &text);
        }
        write_new(&path, &text).map_err(|e| match e {
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                StoreError::Exists(dest.clone())
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_layer_and_survive_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path());
        std::fs::create_dir_all(store.blob_dir()).unwrap();
        let hex = "ab".repeat(32);
        std::fs::write(store.blob_path(&hex), b"GGUF").unwrap();
        let mut base = ModelDefaults {
            system: Some("Be brief.".into()),
            ..Default::default()
        };
        base.options.insert("temperature".into(), json!(0.2));
        base.options.insert("stop".into(), json!(["</s>", "END"]));
        base.messages.push(DefaultMessage {
            role: "user".into(),
            content: "Hi".into(),
        });
        store
            .create("base", &CreateFrom::Blob(hex.clone()), base.clone())
            .unwrap();
        assert_eq!(store.defaults("base:latest"), base);
        assert_eq!(store.resolve("base").unwrap().path, store.blob_path(&hex));

        let mut more = ModelDefaults::default();
        more.options.insert("num_ctx".into(), json!(4096));
        more.options.insert("temperature".into(), json!(0.9));
        store
            .create("derived:v1", &CreateFrom::Model("base".into()), more)
            .unwrap();
        let d = store.defaults("derived:v1");
        assert_eq!(d.system.as_deref(), Some("Be brief."));
        assert_eq!(d.options["temperature"], json!(0.9));
        assert_eq!(d.options["num_ctx"], json!(4096));
        assert_eq!(d.messages, base.messages);

        // A created name is created again; a built-in one is not replaced.
        store
            .create(
                "derived:v1",
                &CreateFrom::Blob(hex.clone()),
                ModelDefaults::default(),
            )
            .unwrap();
        assert!(store.defaults("derived:v1").is_empty());
        assert!(matches!(
            store.create("smollm2:135m", &CreateFrom::Blob(hex.clone()), base),
            Err(StoreError::Exists(_))
        ));
        assert!(matches!(
            store.create(
                "x",
                &CreateFrom::Blob("cd".repeat(32)),
                ModelDefaults::default()
            ),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.create("../x", &CreateFrom::Blob(hex), ModelDefaults::default()),
            Err(StoreError::BadName(_))
        ));
    }

    #[test]
    fn digests_are_sha256_only() {
        let hex = "0f".repeat(32);
        assert_eq!(blob_hex(&format!("sha256:{hex}")), Some(hex.clone()));
        assert_eq!(
            blob_hex(&format!("sha256-{}", hex.to_uppercase())),
            Some(hex)
        );
        assert_eq!(blob_hex("sha256:../../etc/passwd"), None);
        assert_eq!(blob_hex("md5:abc"), None);
    }
}
