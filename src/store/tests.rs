//! The store against real folders: names, paths, manifests that point outside, copies and
//! deletes, an Ollama model directory, digests.

use super::names::valid_name;
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
    // A path is a model only when the operator configured it.
    let p = store.cache_dir().join(SMOL_FILE);
    let as_text = p.to_str().unwrap();
    assert!(matches!(
        store.resolve(as_text),
        Err(StoreError::BadName(_))
    ));
    let configured = ModelStore::new(dir.path()).with_paths([as_text, "smollm2:135m"]);
    assert_eq!(configured.resolve(as_text).unwrap().path, p);
    for probe in [
        "/etc/hostname",
        "../x",
        "a/../../b",
        "./cache/x",
        "x y",
        "x:a:b",
    ] {
        assert!(
            matches!(configured.resolve(probe), Err(StoreError::BadName(_))),
            "{probe}"
        );
    }
}

#[test]
fn manifests_cannot_point_outside_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("victim");
    std::fs::write(&outside, b"precious").unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("cache")).unwrap();
    for (i, file) in [outside.to_str().unwrap(), "../victim", "cache/../../victim"]
        .iter()
        .enumerate()
    {
        std::fs::write(
            models.join(format!("evil{i}.toml")),
            format!("name = \"evil{i}\"\ntags = [\"latest\"]\nfile = {file:?}\n"),
        )
        .unwrap();
    }
    std::fs::write(models.join("broken.toml"), "not toml [").unwrap();
    let store = ModelStore::new(&models);
    for i in 0..3 {
        let name = format!("evil{i}");
        assert!(
            matches!(store.resolve(&name), Err(StoreError::NotFound(_))),
            "{name}"
        );
        assert!(matches!(store.delete(&name), Err(StoreError::NotFound(_))));
    }
    assert!(store.list().unwrap().is_empty());
    assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
    // A FIFO in the cache is not a model (opening it would block a thread forever).
    let fifo = models.join("cache").join(SMOL_FILE);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        assert!(matches!(
            store.resolve("smollm2:135m"),
            Err(StoreError::NotDownloaded { .. })
        ));
    }
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
    // Existing names are never replaced: not a copy, not a built-in name, not a path.
    for taken in ["work:v1", "smollm2:135m", "llama3.2:1b"] {
        assert!(
            matches!(store.copy("smollm2", taken), Err(StoreError::Exists(_))),
            "{taken}"
        );
    }
    assert!(matches!(
        store.copy(file.to_str().unwrap(), "x"),
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
    let store = ModelStore::new(&dir.path().join("models")).with_ollama_dir(Some(ollama.clone()));
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
    // Ollama's files are read, never written or removed: a copy names the blob, deleting
    // the copy leaves it, deleting the Ollama model itself is refused.
    let blob = ollama.join("blobs").join(format!("sha256-{hex}"));
    store.copy("llama3.2:1b", "mine").unwrap();
    assert_eq!(store.resolve("mine").unwrap().path, blob);
    store.delete("mine").unwrap();
    assert!(matches!(
        store.delete("llama3.2:1b"),
        Err(StoreError::NotOwned(_))
    ));
    assert!(blob.exists() && mdir.join("1b").exists());
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
