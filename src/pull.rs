//! Downloading a model a manifest names (`source = { hf = "org/repo", path = "file.gguf" }`)
//! from the Hugging Face hub (or a mirror: `HF_ENDPOINT`), with Ollama-style progress.
//! The file lands in `models/cache/` only after it is complete and its sha256 (when the
//! manifest gives one) matches.

use std::path::PathBuf;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::Sender;

use crate::store::{parse_name, ModelStore, StoreError};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

impl Progress {
    fn status(s: impl Into<String>) -> Self {
        Self {
            status: s.into(),
            digest: None,
            total: None,
            completed: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pull model manifest: file does not exist")]
    UnknownModel,
    #[error("model '{0}' has no download source; place the file in the models cache by hand")]
    NoSource(String),
    #[error(
        "cannot download {url}: {reason}. Is this machine online? Otherwise copy the file to {dest}"
    )]
    Download {
        url: String,
        reason: String,
        dest: String,
    },
    #[error("digest mismatch for {file}: expected sha256 {expected}, got {actual}")]
    Digest {
        file: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The hub's address: `HF_ENDPOINT` (a mirror, or a test server) or huggingface.co.
pub fn hub_endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_owned()
}

/// What `pull` would do, decided without network: `Ok(true)` when the model is present,
/// `Ok(false)` when it can be downloaded, an error when it cannot.
pub fn check(store: &ModelStore, name: &str) -> Result<bool, PullError> {
    parse_name(name)?;
    if store.resolve(name).is_ok() {
        return Ok(true);
    }
    source_of(store, name).map(|_| false)
}

struct Source {
    manifest: crate::store::Manifest,
    repo: String,
    /// Files in the repository. `path = "x.gguf"`: one file, stored as the manifest's `file`;
    /// `files = [...]`: a folder (a sentence-transformers model), stored under `file/`.
    files: Vec<String>,
    folder: bool,
}

fn source_of(store: &ModelStore, name: &str) -> Result<Source, PullError> {
    let canonical = parse_name(name)?;
    let (base, tag) = canonical.rsplit_once(':').unwrap_or((&canonical, "latest"));
    let manifest = store
        .manifests()?
        .into_iter()
        .rev()
        .find(|m| m.name.eq_ignore_ascii_case(base) && m.tags.iter().any(|t| t == tag))
        .ok_or(PullError::UnknownModel)?;
    let source = manifest.source.as_ref();
    let repo = source.and_then(|s| s.get("hf")).and_then(|v| v.as_str());
    let path = source.and_then(|s| s.get("path")).and_then(|v| v.as_str());
    let files: Option<Vec<String>> = source
        .and_then(|s| s.get("files"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        });
    let files = files.filter(|f| f.iter().all(|f| crate::store::plain_relative(f)));
    match (repo, path, files) {
        (Some(repo), _, Some(files)) if !files.is_empty() => Ok(Source {
            repo: repo.to_owned(),
            files,
            folder: true,
            manifest,
        }),
        (Some(repo), Some(path), _) => Ok(Source {
            repo: repo.to_owned(),
            files: vec![path.to_owned()],
            folder: false,
            manifest,
        }),
        _ => Err(PullError::NoSource(canonical)),
    }
}

/// Fetches `name` if it is not present. Progress goes to `progress` (a closed receiver only
/// stops the reports, not the download).
pub async fn pull(
    store: &ModelStore,
    name: &str,
    progress: &Sender<Progress>,
) -> Result<(), PullError> {
    let report = |p: Progress| async move {
        let _ = progress.send(p).await;
    };
    report(Progress::status("pulling manifest")).await;
    if store.resolve(name).is_ok() {
        report(Progress::status("success")).await;
        return Ok(());
    }
    let Source {
        manifest,
        repo,
        files,
        folder,
    } = source_of(store, name)?;
    let dest: PathBuf = store
        .cache_path(&manifest)
        .ok_or_else(|| PullError::NoSource(manifest.name.clone()))?;
    std::fs::create_dir_all(store.cache_dir()).map_err(io(store.cache_dir()))?;
    // Everything lands in a `.part` name first: a model appears complete or not at all.
    let staging = dest.with_extension("part");
    for file in &files {
        let target = if folder {
            staging.join(file)
        } else {
            staging.clone()
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // The manifest's sha256 is the single file's, or a folder's weights'.
        let expected = manifest
            .sha256
            .as_ref()
            .filter(|_| !folder || file.ends_with(".safetensors") || file.ends_with(".gguf"));
        let digest = expected
            .map(|d| format!("sha256:{d}"))
            .unwrap_or_else(|| format!("{repo}/{file}"));
        let url = format!("{}/{repo}/resolve/main/{file}", hub_endpoint());
        let got = download(
            &url,
            &target,
            &dest,
            &digest,
            expected,
            &manifest.file,
            progress,
        )
        .await;
        if let Err(e) = got {
            if folder {
                let _ = std::fs::remove_dir_all(&staging);
            }
            return Err(e);
        }
    }
    report(Progress::status("writing manifest")).await;
    if folder && dest.is_dir() {
        let _ = std::fs::remove_dir_all(&dest);
    }
    std::fs::rename(&staging, &dest).map_err(io(&dest))?;
    report(Progress::status("success")).await;
    Ok(())
}

/// One file to `target`, with progress, checked against `expected` (sha256 hex) if given.
async fn download(
    url: &str,
    target: &std::path::Path,
    dest: &std::path::Path,
    digest: &str,
    expected: Option<&String>,
    label: &str,
    progress: &Sender<Progress>,
) -> Result<(), PullError> {
    let report = |p: Progress| async move {
        let _ = progress.send(p).await;
    };
    let fail = |reason: String| PullError::Download {
        url: url.to_owned(),
        reason,
        dest: dest.display().to_string(),
    };
    // No overall timeout (a model takes minutes), but a hub that does not answer is an error.
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut req = client.get(url);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let total = resp.content_length();
    let mut file = tokio::fs::File::create(target).await.map_err(io(target))?;
    let mut hasher = Sha256::new();
    let mut completed = 0u64;
    let mut last_report = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| fail(e.to_string()))?;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io(target))?;
        completed += chunk.len() as u64;
        // A report per ~1% (or 8 MiB) keeps the stream readable for multi-GB files.
        let step = total.map_or(8 << 20, |t| (t / 100).max(1 << 20));
        if completed - last_report >= step || Some(completed) == total {
            last_report = completed;
            report(Progress {
                status: format!("pulling {digest}"),
                digest: Some(digest.to_owned()),
                total,
                completed: Some(completed),
            })
            .await;
        }
    }
    file.flush().await.map_err(io(target))?;
    drop(file);
    let Some(expected) = expected else {
        return Ok(());
    };
    report(Progress::status("verifying sha256 digest")).await;
    let actual = hex::encode(hasher.finalize());
    if !expected.eq_ignore_ascii_case(&actual) {
        let _ = std::fs::remove_file(target);
        return Err(PullError::Digest {
            file: label.to_owned(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}
