//! Model names: Ollama's forms (`name`, `name:tag`, `namespace/name:tag`), their canonical
//! spelling, and the plain relative paths a manifest may name.

use std::path::{Component, Path};

use super::StoreError;

/// Longest model name accepted.
const MAX_NAME: usize = 200;

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

pub(super) fn split_name(canonical: &str) -> (&str, &str) {
    canonical.rsplit_once(':').unwrap_or((canonical, "latest"))
}

pub(super) fn valid_name(canonical: &str) -> bool {
    let (name, tag) = split_name(canonical);
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    canonical.len() <= MAX_NAME && name.split('/').all(ok) && ok(tag)
}

/// The canonical form of a model name, or `BadName` for anything else (paths included).
pub fn parse_name(model: &str) -> Result<String, StoreError> {
    let canonical = canonical_name(model);
    if valid_name(&canonical) {
        Ok(canonical)
    } else {
        Err(StoreError::BadName(
            model.chars().take(MAX_NAME).collect::<String>(),
        ))
    }
}

/// Whether `file` is a plain relative path (no `..`, no root): it stays inside any folder it is
/// joined to.
pub fn plain_relative(file: &str) -> bool {
    cache_relative(file).is_some()
}

/// `file` as a path inside the cache folder: relative, plain parts only (no `..`, no root).
pub(super) fn cache_relative(file: &str) -> Option<&Path> {
    let p = Path::new(file);
    let plain = p.components().all(|c| matches!(c, Component::Normal(_)));
    (!file.is_empty() && plain).then_some(p)
}

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
