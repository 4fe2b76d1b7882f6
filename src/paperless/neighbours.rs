//! Labelled documents like the one being classified. Whatever holds them — the archive index of
//! a Paperless instance, or the `examples` of a request — answers the same question: the `k`
//! nearest to a document's vector, with their labels by name.

use std::sync::Arc;

use serde::Serialize;

use super::meaning::{cosine, Encoder};
use super::types::Example;
use crate::engine::EngineError;

/// A labelled document close to the one being classified.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Neighbour {
    pub id: String,
    pub similarity: f32,
    #[serde(skip)]
    pub content: String,
    #[serde(skip)]
    pub correspondent: Option<String>,
    #[serde(skip)]
    pub document_type: Option<String>,
    #[serde(skip)]
    pub tags: Vec<String>,
    #[serde(skip)]
    pub storage_path: Option<String>,
    /// Its custom field values by field name (a select option by its label).
    #[serde(skip)]
    pub custom_fields: std::collections::BTreeMap<String, serde_json::Value>,
}

/// How one labelled document was filed: its text (what is kept of it) and its labels.
pub struct Filing<'a> {
    pub text: &'a str,
    pub document_type: Option<&'a str>,
    pub tags: &'a [String],
}

pub trait Neighbours: Send + Sync {
    /// The `k` labelled documents closest to `vector`, most similar first, never the one whose
    /// id is `exclude` (the document itself).
    fn nearest(&self, vector: &[f32], k: usize, exclude: Option<&str>) -> Vec<Neighbour>;

    /// Calls `f` with how every labelled document but `exclude` was filed (`filed.rs` learns
    /// from it what the entries mean).
    fn each_labelled(&self, exclude: Option<&str>, f: &mut dyn FnMut(Filing<'_>));
}

/// No labelled documents (a cold start).
pub struct NoNeighbours;

impl Neighbours for NoNeighbours {
    fn nearest(&self, _: &[f32], _: usize, _: Option<&str>) -> Vec<Neighbour> {
        Vec::new()
    }

    fn each_labelled(&self, _: Option<&str>, _: &mut dyn FnMut(Filing<'_>)) {}
}

/// What of a document the encoder sees: its head, whitespace collapsed (the encoder keeps
/// 512 tokens; the letterhead and the subject carry what it is).
pub fn embedding_text(content: &str) -> String {
    let flat: Vec<&str> = content.split_whitespace().collect();
    flat.join(" ").chars().take(2000).collect()
}

/// The k largest by similarity, most similar first (ties: the earlier one).
pub fn top_k(mut scored: Vec<(f32, usize)>, k: usize) -> Vec<(f32, usize)> {
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    scored
}

/// Labelled examples given with a request (or on the command line), embedded once.
pub struct ExampleSet {
    items: Vec<(Example, Arc<Vec<f32>>)>,
}

impl ExampleSet {
    pub async fn new(encoder: &Encoder, examples: Vec<Example>) -> Result<Self, EngineError> {
        let texts: Vec<String> = examples
            .iter()
            .map(|e| embedding_text(&e.content))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = encoder.embed(&refs).await?;
        Ok(Self {
            items: examples.into_iter().zip(vectors).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Neighbours for ExampleSet {
    fn nearest(&self, vector: &[f32], k: usize, exclude: Option<&str>) -> Vec<Neighbour> {
        let scored = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, (e, _))| exclude.is_none() || e.id.as_deref() != exclude)
            .map(|(i, (_, v))| (cosine(vector, v), i))
            .collect();
        top_k(scored, k)
            .into_iter()
            .map(|(similarity, i)| {
                let e = &self.items[i].0;
                Neighbour {
                    id: e.id.clone().unwrap_or_else(|| format!("example {}", i + 1)),
                    similarity,
                    content: e.content.clone(),
                    correspondent: e.correspondent.clone(),
                    document_type: e.document_type.clone(),
                    tags: e.tags.clone(),
                    storage_path: e.storage_path.clone(),
                    custom_fields: e.custom_fields.clone(),
                }
            })
            .collect()
    }

    fn each_labelled(&self, exclude: Option<&str>, f: &mut dyn FnMut(Filing<'_>)) {
        for (e, _) in &self.items {
            if exclude.is_none() || e.id.as_deref() != exclude {
                f(Filing {
                    text: &e.content,
                    document_type: e.document_type.as_deref(),
                    tags: &e.tags,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_ordered_and_stable() {
        let t = top_k(vec![(0.5, 0), (0.9, 1), (0.5, 2), (0.7, 3)], 3);
        assert_eq!(t, vec![(0.9, 1), (0.7, 3), (0.5, 0)]);
    }

    #[test]
    fn embedding_text_is_the_head_on_one_line() {
        assert_eq!(embedding_text("  a\n\n b  c "), "a b c");
        assert_eq!(embedding_text(&"x ".repeat(5000)).chars().count(), 2000);
    }
}
