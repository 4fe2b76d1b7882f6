//! Tokenizer: `tokenizer.json` when the model ships one, else rebuilt from GGUF metadata the
//! way llama.cpp interprets it. Text is always encoded with special tokens disabled, so a
//! document that contains `<|im_end|>` can never inject a control token; control tokens enter
//! a prompt only by id, placed by the chat template.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

/// Llama 3's pre-tokenization regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// SentencePiece's per-character normalization, applied before `inner` (which then only
    /// splits): what a precompiled `charsmap` does, for vocabularies shipped without one.
    char_map: Option<CharMap>,
    /// Raw bytes of every token id (control tokens: their literal text).
    bytes: Vec<Vec<u8>>,
    /// Ids that are control/special tokens (never produced from text).
    special: Vec<bool>,
    special_by_name: HashMap<String, u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether the model expects BOS at the start of a prompt.
    pub add_bos: bool,
}

/// A per-character replacement table (NFKC-style: full-width forms, ligatures, control
/// characters dropped), sorted by code point.
#[derive(Debug, Clone, Default)]
pub struct CharMap {
    from: Vec<char>,
    /// `to[i]` replaces `from[i]` (possibly empty: the character is dropped).
    to: Vec<String>,
}

impl CharMap {
    /// `entries` in any order; a later entry for the same character wins.
    pub fn new(mut entries: Vec<(char, String)>) -> Self {
        entries.sort_by_key(|(c, _)| *c);
        entries.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(&mut later.1, &mut earlier.1);
            }
            same
        });
        let (from, to) = entries.into_iter().unzip();
        Self { from, to }
    }

    /// The text with every mapped character replaced and runs of spaces collapsed.
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let push = |c: char, out: &mut String| {
            if !(c == ' ' && out.ends_with(' ')) {
                out.push(c);
            }
        };
        for c in text.chars() {
            match self.from.binary_search(&c) {
                Ok(i) => self.to[i].chars().for_each(|r| push(r, &mut out)),
                Err(_) => push(c, &mut out),
            }
        }
        out
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.bytes.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenizer(e.to_string())
}

/// GPT-2's reversible byte <-> printable char table, char -> byte direction.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u8> = (b'!'..=b'~').collect();
    printable.extend(0xA1u8..=0xAC);
    printable.extend(0xAEu8..=0xFF);
    let mut map = HashMap::new();
    let mut extra = 0u32;
    for b in 0u8..=255 {
        let c = if printable.contains(&b) {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid char")
        };
        map.insert(c, b);
    }
    map
}

/// Bytes of a vocabulary entry: byte-level BPE chars, SentencePiece `▁`/`<0xAB>`, or literal.
fn piece_bytes(piece: &str, byte_level: bool, table: &HashMap<char, u8>) -> Vec<u8> {
    if byte_level {
        if let Some(bytes) = piece.chars().map(|c| table.get(&c).copied()).collect() {
            return bytes;
        }
        return piece.as_bytes().to_vec();
    }
    if piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') {
        if let Ok(b) = u8::from_str_radix(&piece[3..5], 16) {
            return vec![b];
        }
    }
    piece.replace('\u{2581}', " ").into_bytes()
}

impl Tokenizer {
    /// Rebuilds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let md = &content.metadata;
        let get = |k: &str| {
            md.get(k)
                .ok_or_else(|| tok_err(format!("GGUF metadata lacks {k}")))
        };
        let string_list = |k: &str| -> Result<Vec<String>> {
            get(k)?
                .to_vec()
                .map_err(tok_err)?
                .iter()
                .map(|v| v.to_string().cloned().map_err(tok_err))
                .collect()
        };
        let id = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let model = get("tokenizer.ggml.model")?.to_string().map_err(tok_err)?;
        if model != "gpt2" {
            return Err(tok_err(format!(
                "GGUF tokenizer model '{model}' cannot be rebuilt exactly; put the model's \
                 tokenizer.json next to the GGUF file (same name, .tokenizer.json)"
            )));
        }
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("default")
            .to_owned();
        let tokens = string_list("tokenizer.ggml.tokens")?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(tok_err)?
                .iter()
                .map(|t| t.to_i32().map_err(tok_err))
                .collect::<Result<_>>()?,
            None => vec![1; tokens.len()],
        };
        let merges = string_list("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| tok_err(format!("malformed merge '{m}'")))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();

        // The pre-tokenizer per `tokenizer.ggml.pre`, as llama.cpp's llama-vocab.cpp defines it.
        let (pre_tok, ignore_merges): (PreTokenizerWrapper, bool) = match pre.as_str() {
            "llama-bpe" | "llama3" => (
                Sequence::new(vec![
                    Split::new(
                        SplitPattern::Regex(LLAMA3_REGEX.into()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(tok_err)?
                    .into(),
                    ByteLevel::new(false, true, false).into(),
                ])
                .into(),
                true,
            ),
            "smollm" | "starcoder" | "refact" => (
                Sequence::new(vec![
                    Digits::new(true).into(),
                    ByteLevel::new(false, true, true).into(),
                ])
                .into(),
                false,
            ),
            "default" | "gpt-2" | "gpt2" => (ByteLevel::new(false, true, true).into(), false),
            other => {
                return Err(tok_err(format!(
                    "GGUF pre-tokenizer '{other}' is not known; put the model's tokenizer.json \
                     next to the GGUF file (same name, .tokenizer.json)"
                )))
            }
        };
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Type 3 = control, 4 = user-defined (llama.cpp's llama_token_type).
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == 3)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == 4)
            .map(|(s, _)| AddedToken::from(s.clone(), false).normalized(false))
            .collect();
        inner.add_special_tokens(control).map_err(tok_err)?;
        inner.add_tokens(user).map_err(tok_err)?;
        inner.set_encode_special_tokens(true);

        let table = unicode_to_byte();
        let special: Vec<bool> = types.iter().map(|t| *t == 3).collect();
        let bytes = tokens
            .iter()
            .zip(&special)
            .map(|(t, s)| {
                if *s {
                    t.as_bytes().to_vec()
                } else {
                    piece_bytes(t, true, &table)
                }
            })
            .collect();
        let special_by_name = tokens
            .iter()
            .zip(&special)
            .enumerate()
            .filter(|(_, (_, s))| **s)
            .map(|(i, (t, _))| (t.clone(), i as u32))
            .collect();
        Ok(Self {
            inner,
            char_map: None,
            bytes,
            special,
            special_by_name,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: md
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(false),
        })
    }

    /// Loads `tokenizer.json` (+ `tokenizer_config.json` for BOS/EOS) from a model folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let config: serde_json::Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let token_of = |key: &str| -> Option<String> {
            match config.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                v => v.get("content")?.as_str().map(str::to_owned),
            }
        };
        let mut tok = Self::from_json_file(&dir.join("tokenizer.json"))?;
        tok.bos = token_of("bos_token").and_then(|t| tok.inner.token_to_id(&t));
        tok.eos = token_of("eos_token").and_then(|t| tok.inner.token_to_id(&t));
        tok.add_bos = config
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok(tok)
    }

    /// A GGUF model's tokenizer: a `tokenizer.json` beside the file (`model.gguf` ->
    /// `model.tokenizer.json`) wins over the metadata, for vocabularies that cannot be rebuilt
    /// from GGUF exactly; BOS/EOS still come from the metadata.
    pub fn for_gguf(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let sidecar = path.with_extension("tokenizer.json");
        if !sidecar.is_file() {
            return Self::from_gguf(content);
        }
        let mut tok = Self::from_json_file(&sidecar)?;
        let id = |k: &str| content.metadata.get(k).and_then(|v| v.to_u32().ok());
        tok.bos = id("tokenizer.ggml.bos_token_id");
        tok.eos = id("tokenizer.ggml.eos_token_id");
        tok.add_bos = content
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        Ok(tok)
    }

    /// A `tokenizer.json` on its own (no BOS/EOS knowledge).
    fn from_json_file(path: &Path) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
        inner.set_encode_special_tokens(true);
        // Some tokenizer.json files carry the exporter's padding/truncation (all-MiniLM's:
        // pad and cut to 128); lengths are the engine's decision, made per model and request.
        inner
            .with_truncation(None)
            .map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
        inner.with_padding(None);
        let byte_level = serde_json::to_value(inner.get_decoder())
            .ok()
            .and_then(|d| Some(d.get("type")?.as_str()? == "ByteLevel"))
            .unwrap_or(false);
        let vocab = inner.get_vocab(true);
        let size = vocab.values().max().map_or(0, |m| *m as usize + 1);
        let added = inner.get_added_tokens_decoder();
        let table = unicode_to_byte();
        let mut bytes = vec![Vec::new(); size];
        let mut special = vec![false; size];
        for (piece, id) in &vocab {
            let id = *id as usize;
            match added.get(&(id as u32)) {
                Some(t) => {
                    special[id] = t.special;
                    bytes[id] = t.content.as_bytes().to_vec();
                }
                None => bytes[id] = piece_bytes(piece, byte_level, &table),
            }
        }
        let special_by_name = added
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (t.content.clone(), *id))
            .collect();
        Ok(Self {
            inner,
            char_map: None,
            bytes,
            special,
            special_by_name,
            bos: None,
            eos: None,
            add_bos: false,
        })
    }

    /// A SentencePiece unigram vocabulary (XLM-RoBERTa's): pieces with their scores in id
    /// order, the unknown piece, and the character normalization map. The text is normalized,
    /// runs of spaces collapse to one, spaces become `▁` (one is prepended), then the most
    /// likely segmentation is taken over the whole text, as SentencePiece does.
    pub fn from_unigram(pieces: Vec<(String, f64)>, unk: u32, char_map: CharMap) -> Result<Self> {
        use tokenizers::models::unigram::Unigram;
        use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
        let bytes: Vec<Vec<u8>> = pieces
            .iter()
            .map(|(p, _)| p.replace('\u{2581}', " ").into_bytes())
            .collect();
        let size = bytes.len();
        let model = Unigram::from(pieces, Some(unk as usize), false).map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(Metaspace::new(
            '\u{2581}',
            PrependScheme::Always,
            false,
        )));
        Ok(Self {
            inner,
            char_map: Some(char_map),
            bytes,
            special: vec![false; size],
            special_by_name: HashMap::new(),
            bos: None,
            eos: None,
            add_bos: false,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// Encodes plain text. Special-token look-alikes stay text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let normalized;
        let text = match &self.char_map {
            Some(map) => {
                normalized = map.apply(text);
                normalized.as_str()
            }
            None => text,
        };
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// The id of a control token such as `<|im_start|>`.
    pub fn special_id(&self, name: &str) -> Option<u32> {
        self.special_by_name.get(name).copied()
    }

    /// The first control token written out in `text`: (byte offset, length, id). Longest
    /// name wins where two start at the same place.
    pub fn find_special(&self, text: &str) -> Option<(usize, usize, u32)> {
        self.special_by_name
            .iter()
            .filter(|(name, _)| !name.is_empty())
            .filter_map(|(name, id)| text.find(name.as_str()).map(|at| (at, name.len(), *id)))
            .min_by_key(|(at, len, _)| (*at, std::cmp::Reverse(*len)))
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Raw bytes of one token (may be a fragment of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// All tokens' bytes, indexed by id (for building grammar token tries).
    pub fn all_token_bytes(&self) -> &[Vec<u8>] {
        &self.bytes
    }

    /// Decodes ids to text; control tokens appear as their literal text.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|id| self.token_bytes(*id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Writes an equivalent `tokenizer.json` (e.g. to ship with a converted model).
    pub fn save_json(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(tok_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let t = unicode_to_byte();
        assert_eq!(t.len(), 256);
        let mut seen: Vec<u8> = t.values().copied().collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[&'\u{120}'], b' '); // 'Ġ'
        assert_eq!(t[&'\u{10A}'], b'\n'); // 'Ċ'
    }

    #[test]
    fn sentencepiece_pieces_map_to_bytes() {
        let t = unicode_to_byte();
        assert_eq!(piece_bytes("\u{2581}Hello", false, &t), b" Hello");
        assert_eq!(piece_bytes("<0x0A>", false, &t), b"\n");
    }
}
