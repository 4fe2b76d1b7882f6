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
use super::filed::Lift;
use super::types::Named;

/// Vectors kept per encoder; beyond it the cache starts over (a 5,000-tag instance fits).
const CACHE_LIMIT: usize = 20_000;
/// Nearest neighbours that set a vector's hubness (CSLS).
const HUB_K: usize = 3;
/// Below this cosine an entry is not taken for any concept, however the others score.
const MIN_SIMILARITY: f32 = 0.78;
/// How much more often an entry's documents must show a concept than all documents do for
/// the filing alone to pair them (see `filed.rs`).
const MIN_LIFT: f32 = 0.4;

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

/// For each entry, the concept it stands for (index into `concepts`), if any: by what the
/// entry's documents show (`learned`, see `filed.rs`) where the archive knows, by its name's
/// meaning otherwise (without an encoder, by the archive alone).
pub async fn map_entries(
    encoder: Option<&Encoder>,
    entries: &[Named],
    concepts: &[Concept],
    learned: &Lift,
) -> Result<Vec<Option<usize>>, EngineError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let Some(encoder) = encoder else {
        return Ok(by_filing(entries.len(), concepts.len(), learned));
    };
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
    Ok(assign(&gains(&sim, learned, entries.len(), concepts.len())))
}

/// The concepts of `n` entries by what their documents show alone (no encoder at hand).
pub fn by_filing(n: usize, concepts: usize, learned: &Lift) -> Vec<Option<usize>> {
    assign(&gains(&[], learned, n, concepts))
}

/// One-to-one assignment by cross-domain similarity local scaling (CSLS: a similarity minus
/// how close each side is to everything), the best total over all pairs at once: a greedy
/// pick of the single best pair first swaps two names that are each second-best for the
/// other's concept ("Payslip"/"Reminder" in one household's French names).
fn assign(gain: &[Vec<Option<f32>>]) -> Vec<Option<usize>> {
    let (n, m) = (gain.len(), gain.first().map_or(0, Vec::len));
    if n == 0 || m == 0 {
        return vec![None; n];
    }
    // Rows are concepts (few), columns the entries (up to thousands of tags) and then one
    // "no entry" column per concept. A pair's gain is offset so that any allowed pair beats
    // leaving the concept without an entry.
    let cost: Vec<Vec<f64>> = (0..m)
        .map(|j| {
            (0..n + m)
                .map(|i| match gain.get(i).map(|g| g[j]) {
                    Some(Some(g)) => -(1.0 + f64::from(g)),
                    Some(None) => FORBIDDEN,
                    None => 0.0,
                })
                .collect()
        })
        .collect();
    let mut out = vec![None; n];
    for (concept, col) in min_cost_assignment(&cost).into_iter().enumerate() {
        if col < n && gain[col][concept].is_some() {
            out[col] = Some(concept);
        }
    }
    out
}

/// What pairing each (entry, concept) is worth, `None` where it may not be paired: the
/// name's CSLS score where the name is close enough (`sim`, empty without an encoder), or
/// what the entry's documents show where that is clear, whichever says more. A clear
/// showing (a lift of 0.4 and more) outweighs any name: CSLS scores stay near or below 0.2.
fn gains(sim: &[Vec<f32>], learned: &Lift, n: usize, m: usize) -> Vec<Vec<Option<f32>>> {
    let entry_hub: Vec<f32> = sim
        .iter()
        .map(|r| top_mean(r.iter().copied(), HUB_K))
        .collect();
    let concept_hub: Vec<f32> = (0..m)
        .map(|j| top_mean(sim.iter().map(|r| r[j]), HUB_K))
        .collect();
    (0..n)
        .map(|i| {
            (0..m)
                .map(|j| {
                    let by_name = sim
                        .get(i)
                        .map(|r| r[j])
                        .filter(|&s| s >= MIN_SIMILARITY)
                        .map(|s| 2.0 * s - entry_hub[i] - concept_hub[j]);
                    let by_filing = learned
                        .get(i)
                        .and_then(Option::as_ref)
                        .map(|l| l[j])
                        .filter(|&l| l >= MIN_LIFT);
                    match (by_name, by_filing) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    }
                })
                .collect()
        })
        .collect()
}

/// The cost of a pair that may not be chosen (finite, so the potentials stay finite).
const FORBIDDEN: f64 = 1e9;

/// Each row to its own column at the least total cost (the Hungarian algorithm with
/// potentials, O(rows² × columns)); needs rows ≤ columns.
fn min_cost_assignment(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    let m = cost.first().map_or(0, Vec::len);
    // 1-based, column 0 is the virtual start; `row_of[j]` is the row holding column j.
    let mut u = vec![0f64; n + 1];
    let mut v = vec![0f64; m + 1];
    let mut row_of = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for row in 1..=n {
        row_of[0] = row;
        let mut j0 = 0;
        let mut min_to = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=m {
                if !used[j] {
                    let reduced = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if reduced < min_to[j] {
                        min_to[j] = reduced;
                        way[j] = j0;
                    }
                    if min_to[j] < delta {
                        delta = min_to[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut col_of = vec![0; n];
    for j in 1..=m {
        if row_of[j] != 0 {
            col_of[row_of[j] - 1] = j - 1;
        }
    }
    col_of
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
        let a = assign(&by_names(&sim));
        assert_eq!(a[1], Some(0));
        assert_eq!(a[2], Some(2));
        assert_eq!(a[0], Some(1), "the hub gets what is left");
    }

    fn by_names(sim: &[Vec<f32>]) -> Vec<Vec<Option<f32>>> {
        gains(sim, &Vec::new(), sim.len(), sim[0].len())
    }

    /// The best total of gains over every one-to-one assignment, by brute force.
    fn best_total(gain: &[Vec<Option<f32>>], entry: usize, taken: &mut Vec<bool>) -> f32 {
        if entry == gain.len() {
            return 0.0;
        }
        let mut best = best_total(gain, entry + 1, taken);
        for c in 0..taken.len() {
            if let (false, Some(g)) = (taken[c], gain[entry][c]) {
                taken[c] = true;
                best = best.max(1.0 + g + best_total(gain, entry + 1, taken));
                taken[c] = false;
            }
        }
        best
    }

    #[test]
    fn the_assignment_has_the_best_total() {
        // Greedy (best pair first) loses here: it was what swapped names in practice.
        let mut cases = vec![vec![
            vec![0.89, 0.84, 0.79],
            vec![0.90, 0.93, 0.84],
            vec![0.92, 0.92, 0.79],
        ]];
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            0.70 + (seed >> 40) as f32 / (1u64 << 24) as f32 * 0.28
        };
        for (n, m) in [(3, 3), (4, 3), (3, 5), (5, 4)]
            .into_iter()
            .cycle()
            .take(200)
        {
            cases.push((0..n).map(|_| (0..m).map(|_| next()).collect()).collect());
        }
        for sim in cases {
            let gain = by_names(&sim);
            let got: f32 = assign(&gain)
                .iter()
                .enumerate()
                .filter_map(|(e, c)| c.map(|c| 1.0 + gain[e][c].unwrap()))
                .sum();
            let best = best_total(&gain, 0, &mut vec![false; sim[0].len()]);
            assert!((got - best).abs() < 1e-4, "{sim:?}: {got} < {best}");
        }
    }

    #[test]
    fn many_entries_few_concepts() {
        let mut sim = vec![vec![0.5, 0.5]; 3000];
        sim[1700] = vec![0.9, 0.5];
        sim[42] = vec![0.5, 0.88];
        let a = assign(&by_names(&sim));
        assert_eq!(a[1700], Some(0));
        assert_eq!(a[42], Some(1));
        assert_eq!(a.iter().flatten().count(), 2);
    }

    #[test]
    fn what_the_documents_show_outweighs_the_name() {
        // Entry 0's name is closest to concept 0, but its documents clearly show concept 1;
        // entry 1 has no documents to speak for it.
        let sim = vec![vec![0.90, 0.80], vec![0.86, 0.79]];
        let learned: Lift = vec![Some(vec![0.0, 0.7]), None];
        assert_eq!(assign(&gains(&sim, &learned, 2, 2)), vec![Some(1), Some(0)]);
        assert_eq!(by_filing(2, 2, &learned), vec![Some(1), None]);
    }

    #[test]
    fn nothing_close_enough_means_no_concept() {
        assert_eq!(assign(&by_names(&[vec![0.5, 0.6]])), vec![None]);
    }
}
