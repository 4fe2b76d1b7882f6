//! What the owner's names mean. The encoder (a multilingual sentence embedding model) turns
//! entry names, concept descriptions and documents into vectors; an entry stands for the
//! concept whose description it is closest to, decided over the whole list at once so that
//! every concept gets at most one entry and a name that is close to everything (a "hub") does
//! not take every concept. Nothing compares spellings: "Rechnung", "Invoice" and "Facture"
//! reach the invoice concept through the encoder alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::engine::{EmbedTask, Engine, EngineError, Event};

use super::concepts::Concept;
use super::types::Named;

/// Vectors kept per encoder; beyond it the cache starts over (a 5,000-tag instance fits).
const CACHE_LIMIT: usize = 20_000;
/// Nearest neighbours that set a vector's hubness (CSLS).
const HUB_K: usize = 3;
/// Below this cosine an entry is not taken for any concept, however the others score.
const MIN_SIMILARITY: f32 = 0.78;

/// Embeds text with the configured embedding model, caching vectors by text.
pub struct Encoder {
    engine: Engine,
    model: String,
    /// e5 models expect every input to start with "query: " (symmetric tasks).
    prefix: &'static str,
    cache: Mutex<HashMap<String, Arc<Vec<f32>>>>,
}

impl Encoder {
    pub fn new(engine: Engine, model: &str) -> Self {
        let prefix = if model.contains("e5") { "query: " } else { "" };
        Self {
            engine,
            model: model.to_owned(),
            prefix,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    fn cached(&self, text: &str) -> Option<Arc<Vec<f32>>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(text)
            .cloned()
    }

    /// Unit vectors of `texts`, in order (one engine call for those not cached).
    pub async fn embed(&self, texts: &[&str]) -> Result<Vec<Arc<Vec<f32>>>, EngineError> {
        let missing: Vec<&str> = {
            let mut seen = std::collections::HashSet::new();
            texts
                .iter()
                .copied()
                .filter(|t| self.cached(t).is_none() && seen.insert(*t))
                .collect()
        };
        for chunk in missing.chunks(256) {
            let task = EmbedTask {
                inputs: chunk
                    .iter()
                    .map(|t| format!("{}{t}", self.prefix))
                    .collect(),
                truncate: true,
                dimensions: None,
                num_ctx: None,
            };
            let mut sub = self.engine.embed(&self.model, task, None).await?;
            let vectors = match sub.events.recv().await {
                Some(Event::Embeddings { vectors, .. }) => vectors,
                Some(Event::Error(e)) => return Err(e),
                _ => return Err(EngineError::WorkerGone),
            };
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() + vectors.len() > CACHE_LIMIT {
                cache.clear();
            }
            for (t, v) in chunk.iter().zip(vectors) {
                cache.insert((*t).to_owned(), Arc::new(v));
            }
        }
        texts
            .iter()
            .map(|t| self.cached(t).ok_or(EngineError::WorkerGone))
            .collect()
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalized_mean(vs: &[Arc<Vec<f32>>]) -> Vec<f32> {
    let dim = vs.first().map_or(0, |v| v.len());
    let mut m = vec![0f32; dim];
    for v in vs {
        m.iter_mut().zip(v.iter()).for_each(|(a, b)| *a += b);
    }
    let n = m.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    m.iter_mut().for_each(|x| *x /= n);
    m
}

/// Mean of the `k` largest values.
fn top_mean(values: impl Iterator<Item = f32>, k: usize) -> f32 {
    let mut v: Vec<f32> = values.collect();
    v.sort_by(|a, b| b.total_cmp(a));
    let k = k.min(v.len()).max(1);
    v.iter().take(k).sum::<f32>() / k as f32
}

/// For each entry, the concept it stands for (index into `concepts`), if any.
pub async fn map_entries(
    encoder: &Encoder,
    entries: &[Named],
    concepts: &[Concept],
) -> Result<Vec<Option<usize>>, EngineError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let phrases: Vec<&str> = concepts
        .iter()
        .flat_map(|c| c.meaning.iter().copied())
        .collect();
    let phrase_vectors = encoder.embed(&phrases).await?;
    let mut at = 0;
    let concept_vectors: Vec<Vec<f32>> = concepts
        .iter()
        .map(|c| {
            let v = normalized_mean(&phrase_vectors[at..at + c.meaning.len()]);
            at += c.meaning.len();
            v
        })
        .collect();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let entry_vectors = encoder.embed(&names).await?;
    let sim: Vec<Vec<f32>> = entry_vectors
        .iter()
        .map(|e| concept_vectors.iter().map(|c| cosine(e, c)).collect())
        .collect();
    Ok(assign(&sim))
}

/// One-to-one assignment by cross-domain similarity local scaling (CSLS: a similarity minus
/// how close each side is to everything), greedily from the best pair down.
fn assign(sim: &[Vec<f32>]) -> Vec<Option<usize>> {
    let (n, m) = (sim.len(), sim.first().map_or(0, Vec::len));
    let entry_hub: Vec<f32> = sim
        .iter()
        .map(|r| top_mean(r.iter().copied(), HUB_K))
        .collect();
    let concept_hub: Vec<f32> = (0..m)
        .map(|j| top_mean(sim.iter().map(|r| r[j]), HUB_K))
        .collect();
    let mut pairs: Vec<(f32, usize, usize)> = (0..n)
        .flat_map(|i| (0..m).map(move |j| (i, j)))
        .filter(|&(i, j)| sim[i][j] >= MIN_SIMILARITY)
        .map(|(i, j)| (2.0 * sim[i][j] - entry_hub[i] - concept_hub[j], i, j))
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = vec![None; n];
    let mut taken = vec![false; m];
    for (_, i, j) in pairs {
        if out[i].is_none() && !taken[j] {
            out[i] = Some(j);
            taken[j] = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_does_not_take_every_concept() {
        // Entry 0 is close to everything; entries 1 and 2 each clearly mean one concept.
        let sim = vec![
            vec![0.95, 0.94, 0.93],
            vec![0.90, 0.80, 0.79],
            vec![0.79, 0.80, 0.91],
        ];
        let a = assign(&sim);
        assert_eq!(a[1], Some(0));
        assert_eq!(a[2], Some(2));
        assert_eq!(a[0], Some(1), "the hub gets what is left");
    }

    #[test]
    fn nothing_close_enough_means_no_concept() {
        assert_eq!(assign(&[vec![0.5, 0.6]]), vec![None]);
    }
}
