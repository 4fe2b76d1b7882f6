//! How the evidence is weighed, field by field, and what decided each field (the answer to
//! "why this tag?"). Evidence comes in three kinds, by how much it is the owner's own word:
//! a matching rule the owner wrote, the labels of the owner's most similar documents
//! (neighbours, weighted by similarity), and what the text itself shows (cue words, mapped to
//! the owner's entries by meaning). The model decides only what these leave open.

use serde::Serialize;

use super::neighbours::Neighbour;

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The entry's own Paperless matching rule fired.
    Rule,
    /// The text names it (correspondent) or shows it (cue words of a type or topic).
    Text,
    /// The labels of the most similar labelled documents.
    Neighbours,
    /// The constrained model call.
    Model,
    /// Nothing supported a value.
    Nothing,
}

/// One field's decision and its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Why {
    pub by: Source,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Why {
    pub fn new(by: Source, detail: impl Into<String>) -> Self {
        Self {
            by,
            detail: detail.into(),
        }
    }
}

/// A neighbour counts by how close it is to the best one: weight e^((s - s_best) / T).
const TEMPERATURE: f32 = 0.02;
/// Neighbours further than this below the best one do not vote.
const SPREAD: f32 = 0.08;
/// Neighbours consulted.
pub const K: usize = 7;

/// How much the neighbours count as a whole, by how similar the best one is: with e5
/// vectors, unrelated household documents sit near 0.85 and documents of one kind from one
/// sender above 0.92. Below the first, neighbours say nothing; above the second, all they can.
const UNRELATED: f32 = 0.85;
const ALIKE: f32 = 0.92;

/// Votes of the neighbours: per neighbour its weight; they sum to the neighbours' confidence
/// (0 to 1, see [`ALIKE`]).
pub fn weights(neighbours: &[Neighbour]) -> Vec<f32> {
    let Some(best) = neighbours.first().map(|n| n.similarity) else {
        return Vec::new();
    };
    let confidence = ((best - UNRELATED) / (ALIKE - UNRELATED)).clamp(0.0, 1.0);
    let raw: Vec<f32> = neighbours
        .iter()
        .map(|n| {
            if best - n.similarity > SPREAD {
                0.0
            } else {
                ((n.similarity - best) / TEMPERATURE).exp()
            }
        })
        .collect();
    let total: f32 = raw.iter().sum::<f32>().max(1e-9);
    raw.iter().map(|w| confidence * w / total).collect()
}

/// Share of the neighbours' weight whose label set contains each of `names`.
pub fn shares(
    names: &[&str],
    neighbours: &[Neighbour],
    weights: &[f32],
    labels: impl Fn(&Neighbour) -> Vec<&str>,
) -> Vec<f32> {
    names
        .iter()
        .map(|name| {
            neighbours
                .iter()
                .zip(weights)
                .filter(|(n, _)| labels(n).iter().any(|l| l.eq_ignore_ascii_case(name)))
                .map(|(_, w)| *w)
                .sum()
        })
        .collect()
}

/// Weights of the kinds of evidence.
const RULE: f32 = 2.0;
const TEXT_HEAD: f32 = 0.9;
const TEXT_BODY: f32 = 0.55;
const NEIGHBOURS: f32 = 1.0;
/// A score below this decides nothing (the model is asked).
const DECIDE: f32 = 0.5;

/// What the text shows for the document type: the entry its cue concept stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeCue {
    pub entry: usize,
    pub in_head: bool,
    pub cue: String,
}

/// The document type among `names` (index), or None when the evidence decides nothing.
pub fn document_type(
    names: &[&str],
    rules: &[usize],
    cue: Option<&TypeCue>,
    shares: &[f32],
) -> Option<(usize, Why)> {
    let score = |i: usize| -> f32 {
        let rule = if rules.contains(&i) { RULE } else { 0.0 };
        let text = match cue {
            Some(c) if c.entry == i && c.in_head => TEXT_HEAD,
            Some(c) if c.entry == i => TEXT_BODY,
            _ => 0.0,
        };
        rule + text + NEIGHBOURS * shares.get(i).copied().unwrap_or(0.0)
    };
    let best = (0..names.len()).max_by(|&a, &b| score(a).total_cmp(&score(b)).then(b.cmp(&a)))?;
    if score(best) < DECIDE {
        return None;
    }
    let why = if rules.contains(&best) {
        Why::new(
            Source::Rule,
            format!("its matching rule fired for {}", names[best]),
        )
    } else if cue.is_some_and(|c| c.entry == best) && shares.get(best).copied().unwrap_or(0.0) < 0.5
    {
        let c = cue.expect("checked");
        Why::new(Source::Text, format!("the text says \"{}\"", c.cue))
    } else {
        Why::new(
            Source::Neighbours,
            format!(
                "{:.0}% of the most similar documents' weight",
                100.0 * shares.get(best).copied().unwrap_or(0.0)
            ),
        )
    };
    Some((best, why))
}

/// Per-entry evidence for tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagEvidence {
    /// The entry's topic concept is among the strongest the text shows (and the cue).
    pub text: Option<String>,
    pub rule: bool,
    pub share: f32,
}

const TAG_TEXT: f32 = 0.6;
const TAG_DECIDE: f32 = 0.5;

/// The tags to set (indices, strongest first, at most `max`) with their reasons.
pub fn tags(evidence: &[TagEvidence], max: usize) -> Vec<(usize, Why)> {
    let mut scored: Vec<(f32, usize)> = evidence
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let s = if e.rule { RULE } else { 0.0 }
                + if e.text.is_some() { TAG_TEXT } else { 0.0 }
                + NEIGHBOURS * e.share;
            (s, i)
        })
        .filter(|(s, _)| *s >= TAG_DECIDE)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .take(max)
        .map(|(_, i)| {
            let e = &evidence[i];
            let why = if e.rule {
                Why::new(Source::Rule, "its matching rule fired")
            } else if e.share >= TAG_DECIDE {
                Why::new(
                    Source::Neighbours,
                    format!(
                        "{:.0}% of the most similar documents' weight",
                        100.0 * e.share
                    ),
                )
            } else {
                Why::new(
                    Source::Text,
                    format!("the text says \"{}\"", e.text.clone().unwrap_or_default()),
                )
            };
            (i, why)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(sim: f32, ty: &str, tags: &[&str]) -> Neighbour {
        Neighbour {
            id: String::new(),
            similarity: sim,
            content: String::new(),
            correspondent: None,
            document_type: Some(ty.into()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            storage_path: None,
            custom_fields: Default::default(),
        }
    }

    #[test]
    fn closer_neighbours_weigh_more_and_far_ones_not_at_all() {
        let ns = [n(0.95, "a", &[]), n(0.93, "b", &[]), n(0.80, "c", &[])];
        let w = weights(&ns);
        assert!(w[0] > w[1] && w[1] > 0.0 && w[2] == 0.0);
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // Neighbours that are not much alike count for little.
        let far = weights(&[n(0.87, "a", &[]), n(0.86, "b", &[])]);
        assert!(far.iter().sum::<f32>() < 0.5);
    }

    #[test]
    fn a_rule_beats_everything_then_the_neighbours_then_the_text() {
        let names = ["Invoice", "Letter"];
        let cue = TypeCue {
            entry: 0,
            in_head: false,
            cue: "rechnung".into(),
        };
        // Most similar documents say Letter; the text only mentions an invoice in passing.
        let (i, why) = document_type(&names, &[], Some(&cue), &[0.2, 0.8]).unwrap();
        assert_eq!((i, why.by), (1, Source::Neighbours));
        // A heading outweighs a split vote.
        let head = TypeCue {
            in_head: true,
            ..cue.clone()
        };
        let (i, why) = document_type(&names, &[], Some(&head), &[0.4, 0.6]).unwrap();
        assert_eq!((i, why.by), (0, Source::Text));
        let (i, why) = document_type(&names, &[1], Some(&head), &[1.0, 0.0]).unwrap();
        assert_eq!((i, why.by), (1, Source::Rule));
        assert!(document_type(&names, &[], None, &[0.3, 0.3]).is_none());
    }

    #[test]
    fn tags_need_enough_evidence_and_stay_few() {
        let e = |text: bool, share: f32| TagEvidence {
            text: text.then(|| "strom".to_string()),
            rule: false,
            share,
        };
        let chosen = tags(
            &[e(true, 0.0), e(false, 0.3), e(false, 0.9), e(true, 0.6)],
            3,
        );
        let idx: Vec<usize> = chosen.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![3, 2, 0]);
        assert_eq!(chosen[0].1.by, Source::Neighbours);
        assert_eq!(chosen[2].1.by, Source::Text);
        let five: Vec<TagEvidence> = (0..5).map(|_| e(true, 0.0)).collect();
        assert_eq!(tags(&five, 2).len(), 2);
    }
}
