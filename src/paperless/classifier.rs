//! One document in, one suggestion out, with the reason for every field. The evidence — the
//! owner's matching rules, the labels of the owner's most similar documents, what the text
//! shows (names, cue words, dates) — decides what it can (`fusion.rs`); one
//! grammar-constrained model call decides the rest among the choices left, with the nearest
//! labelled documents as examples. Nothing is keyed on how the taxonomy spells its entries:
//! cue concepts reach the owner's entries by meaning (`meaning.rs`).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::concepts::{self, TOPICS, TYPES};
use super::filed::{self, Lift};
use super::fusion::{self, Source, TagEvidence, Why};
use super::meaning::{by_filing, map_entries, Encoder};
use super::neighbours::{embedding_text, Neighbour, Neighbours};
use super::prompt::{schema, system_prompt};
use super::{rules, shortlist};
use crate::engine::{
    ChatMessage, Engine, EngineError, Event, Format, GenerateTask, PromptInput, SamplingParams,
};

pub use super::prompt::{MAX_TAGS, MAX_TITLE};
pub use super::types::{by_name, Example, Named, Suggestion, Taxonomy};

/// Context for the model's call unless the caller sets one. The decisions taken from the text
/// read all of it; the model sees head and tail. On DEV, 2048 instead of 4096 tokens kept every
/// score and halved the p95 latency (the longest documents are prefill-bound).
pub const CLASSIFY_CTX: usize = 2048;

/// Why each field has its value.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub correspondent: Why,
    pub document_type: Why,
    pub tags: Vec<TagWhy>,
    pub created: Why,
    /// The labelled documents consulted, most similar first.
    pub neighbours: Vec<Neighbour>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TagWhy {
    pub tag: String,
    #[serde(flatten)]
    pub why: Why,
}

#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    pub suggestion: Suggestion,
    pub explanation: Explanation,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// The document was shortened to fit the context (its middle cut out).
    pub truncated: bool,
    #[serde(serialize_with = "as_ms")]
    pub latency: Duration,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the model's answer is not the expected JSON: {0}")]
    BadAnswer(String),
    #[error("the document has no readable text to classify (a blank scan, or OCR noise only)")]
    Empty,
}

/// Repairs what the grammar cannot express: duplicate tags, dates in the future.
fn clean(mut s: Suggestion, today: chrono::NaiveDate) -> Suggestion {
    let mut seen = Vec::new();
    s.tags.retain(|t| {
        let new = !seen.contains(t);
        seen.push(t.clone());
        new
    });
    s.tags.truncate(MAX_TAGS);
    s.created = s
        .created
        .filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok_and(|d| d <= today));
    s.title = s.title.trim().to_owned();
    s
}

fn names(items: &[Named]) -> Vec<&str> {
    items.iter().map(|n| n.name.as_str()).collect()
}

/// One document to classify.
pub struct Job<'a> {
    pub model: &'a str,
    pub taxonomy: &'a Taxonomy,
    pub content: &'a str,
    pub num_ctx: Option<usize>,
    /// A correspondent the text names but the taxonomy lacks may be coined.
    pub new_correspondent: bool,
    /// The owner's labelled documents.
    pub neighbours: &'a dyn Neighbours,
    /// This document's id among them: it is never its own neighbour.
    pub id: Option<&'a str>,
}

/// The classifier: the engine (the model call) and the encoder (documents and names as
/// vectors). Cheap to share; the encoder caches vectors of names and examples.
pub struct Classifier {
    engine: Engine,
    encoder: Option<Encoder>,
    /// Whether the missing-encoder warning was logged.
    warned: std::sync::atomic::AtomicBool,
}

/// What the evidence decided before the model runs.
struct Decided {
    correspondent: Option<(String, Why)>,
    document_type: Option<(String, Why)>,
    tags: Vec<(String, Why)>,
    /// The type concept to take the title's word from.
    type_concept: Option<usize>,
    /// Tags that stand for no concept: the text's cues cannot judge them.
    unmapped_tags: Vec<String>,
}

impl Classifier {
    /// `embed_model`: the encoder for neighbours and the meaning of names (None: neither).
    pub fn new(engine: Engine, embed_model: Option<&str>) -> Self {
        let encoder = embed_model.map(|m| Encoder::new(engine.clone(), m));
        Self {
            engine,
            encoder,
            warned: Default::default(),
        }
    }

    /// An encoder that is configured but not in the store leaves its evidence out (with one
    /// warning) instead of failing every document.
    fn without_missing_encoder<T>(
        &self,
        r: Result<T, EngineError>,
        fallback: T,
    ) -> Result<T, EngineError> {
        match r {
            Err(EngineError::Store(e)) => {
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the embedding model is missing: classifying \
                        without similar documents and without the meaning of names");
                }
                Ok(fallback)
            }
            other => other,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn encoder(&self) -> Option<&Encoder> {
        self.encoder.as_ref()
    }

    /// For each entry of `entries`, the concept of `concepts` it means: by the documents filed
    /// under it (`learned`) and by its name (none by name without an encoder).
    async fn meanings(
        &self,
        entries: &[Named],
        concepts: &[concepts::Concept],
        learned: &Lift,
    ) -> Result<Vec<Option<usize>>, EngineError> {
        let r = map_entries(self.encoder.as_ref(), entries, concepts, learned).await;
        self.without_missing_encoder(r, by_filing(entries.len(), concepts.len(), learned))
    }

    /// The labelled documents nearest to `content`.
    async fn neighbours(&self, job: &Job<'_>) -> Result<Vec<Neighbour>, EngineError> {
        let Some(enc) = &self.encoder else {
            return Ok(Vec::new());
        };
        let text = embedding_text(job.content);
        let v = match self
            .without_missing_encoder(enc.embed(&[text.as_str()]).await.map(Some), None)?
        {
            Some(v) => v,
            None => return Ok(Vec::new()),
        };
        Ok(job.neighbours.nearest(&v[0], fusion::K, job.id))
    }

    /// Decides what the evidence supports; the rest is left to the model.
    async fn decide(
        &self,
        job: &Job<'_>,
        neighbours: &[Neighbour],
    ) -> Result<Decided, EngineError> {
        let t = job.taxonomy;
        let text = job.content;
        let w = fusion::weights(neighbours);

        // Document type: rule, neighbours, the text's cue mapped to the owner's entry.
        let filed = filed::learn(job.neighbours, job.id, t);
        let type_names = names(&t.document_types);
        let type_meaning = self
            .meanings(&t.document_types, TYPES, &filed.document_types)
            .await?;
        let cue = concepts::type_cue(text);
        let type_cue = cue.and_then(|c| {
            let entry = type_meaning.iter().position(|m| *m == Some(c.concept))?;
            Some(fusion::TypeCue {
                entry,
                in_head: c.in_head,
                cue: c.cue.to_owned(),
            })
        });
        let type_shares = fusion::shares(&type_names, neighbours, &w, |n| {
            n.document_type.as_deref().into_iter().collect()
        });
        let type_rules = rules::firing(&t.document_types, text);
        let document_type =
            fusion::document_type(&type_names, &type_rules, type_cue.as_ref(), &type_shares);
        let type_concept = document_type
            .as_ref()
            .and_then(|(i, _)| type_meaning[*i])
            .or(cue.map(|c| c.concept));

        // Tags: per entry, rule + neighbours + the strongest topics the text shows.
        let tag_meaning = self.meanings(&t.tags, TOPICS, &filed.tags).await?;
        let shown = concepts::shown_topics(text);
        let tag_names = names(&t.tags);
        let tag_shares = fusion::shares(&tag_names, neighbours, &w, |n| {
            n.tags.iter().map(String::as_str).collect()
        });
        let tag_rules = rules::firing(&t.tags, text);
        let evidence: Vec<TagEvidence> = (0..t.tags.len())
            .map(|i| TagEvidence {
                text: tag_meaning[i]
                    .filter(|c| shown.contains(c))
                    .map(|c| concepts::topic_word(text, c).unwrap_or_default().to_owned()),
                rule: tag_rules.contains(&i),
                share: tag_shares[i],
            })
            .collect();
        let tags = fusion::tags(&evidence, MAX_TAGS)
            .into_iter()
            .map(|(i, why)| (t.tags[i].name.clone(), why))
            .collect();

        // Correspondent: a rule, else the one the text names (neighbours settle several).
        let corr_names = names(&t.correspondents);
        let corr_rules = rules::firing(&t.correspondents, text);
        let mentioned = super::evidence::mentioned(text, &corr_names);
        let corr_shares = fusion::shares(&corr_names, neighbours, &w, |n| {
            n.correspondent.as_deref().into_iter().collect()
        });
        let correspondent = if let Some(&i) = corr_rules.first() {
            Some((i, Why::new(Source::Rule, "its matching rule fired")))
        } else if mentioned.len() == 1 {
            Some((mentioned[0], Why::new(Source::Text, "the text names it")))
        } else {
            mentioned
                .iter()
                .copied()
                .filter(|&i| corr_shares[i] >= 0.5)
                .max_by(|&a, &b| corr_shares[a].total_cmp(&corr_shares[b]))
                .map(|i| {
                    (
                        i,
                        Why::new(
                            Source::Neighbours,
                            "named in the text, and the issuer of the most similar documents",
                        ),
                    )
                })
        };
        let unmapped_tags = t
            .tags
            .iter()
            .zip(&tag_meaning)
            .filter(|(_, m)| m.is_none())
            .map(|(e, _)| e.name.clone())
            .collect();
        Ok(Decided {
            unmapped_tags,
            correspondent: correspondent.map(|(i, why)| (t.correspondents[i].name.clone(), why)),
            document_type: document_type.map(|(i, why)| (t.document_types[i].name.clone(), why)),
            tags,
            type_concept,
        })
    }

    /// The choices left to the model, cut to what fits the context (`shortlist`).
    fn open_choices(
        &self,
        job: &Job<'_>,
        decided: &Decided,
        neighbours: &[Neighbour],
        num_ctx: usize,
    ) -> Taxonomy {
        let t = job.taxonomy;
        let keep = |d: &Option<(String, Why)>, all: &[Named], open: Vec<Named>| match d {
            Some((name, _)) => by_name(all, name).into_iter().cloned().collect(),
            None => open,
        };
        let mentioned: Vec<Named> =
            super::evidence::mentioned(job.content, &names(&t.correspondents))
                .into_iter()
                .map(|i| t.correspondents[i].clone())
                .collect();
        let correspondents = keep(&decided.correspondent, &t.correspondents, mentioned);
        let document_types = keep(
            &decided.document_type,
            &t.document_types,
            t.document_types.clone(),
        );
        // With labelled documents at hand, a tag none of the similar ones carries is not
        // offered; without, the model may pick among the tags the text's cues cannot judge
        // (those that mean none of the concepts). A tag that does mean one was judged already.
        let tags = if neighbours.is_empty() && decided.tags.len() < MAX_TAGS {
            t.tags
                .iter()
                .filter(|e| decided.unmapped_tags.contains(&e.name))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let budget = shortlist::Budget::for_context(
            num_ctx,
            shortlist::list_cost(&document_types),
            shortlist::list_cost(&correspondents),
        );
        let text_words: std::collections::HashSet<String> =
            shortlist::words(job.content).into_iter().collect();
        let score = |n: &Named| shortlist::lexical_score(&n.name, &text_words);
        Taxonomy {
            tags: shortlist::fit(&tags, budget.tags, score),
            correspondents: shortlist::fit(&correspondents, budget.correspondents, score),
            document_types: shortlist::fit(&document_types, budget.document_types, score),
        }
    }

    /// Classifies one document: evidence first, then one constrained model call.
    pub async fn classify(&self, job: Job<'_>) -> Result<Classification, ClassifyError> {
        let content = job.content;
        if !super::evidence::readable(content) {
            return Err(ClassifyError::Empty);
        }
        let start = Instant::now();
        let today = chrono::Utc::now().date_naive();
        // The first date on an issue-date line (else the first not labelled as something
        // else) is the answer: on DEV it is right far more often than the model's pick.
        let dates: Vec<String> = super::dates::issue_date_candidates(content)
            .into_iter()
            .filter(|d| *d <= today)
            .take(1)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect();
        let num_ctx = job.num_ctx.unwrap_or(CLASSIFY_CTX);
        let neighbours = self.neighbours(&job).await?;
        let decided = self.decide(&job, &neighbours).await?;
        let view = self.open_choices(&job, &decided, &neighbours, num_ctx);
        // With nothing named, a new name may be coined (when allowed); otherwise null.
        let new_correspondent = job.new_correspondent && view.correspondents.is_empty();
        let open_tags = MAX_TAGS - decided.tags.len().min(MAX_TAGS);
        if !needs_model(&decided, &view, new_correspondent, open_tags, content) {
            // The evidence decided every field: the model's call would only repeat it.
            let answer = Suggestion {
                title: String::new(),
                correspondent: None,
                document_type: None,
                tags: Vec::new(),
                created: None,
            };
            let (suggestion, explanation) =
                merge(answer, decided, dates.first().cloned(), neighbours, content);
            return Ok(Classification {
                suggestion: clean(suggestion, today),
                explanation,
                prompt_tokens: 0,
                output_tokens: 0,
                truncated: false,
                latency: start.elapsed(),
            });
        }
        let examples: Vec<&Neighbour> = neighbours.iter().take(2).collect();
        let task = GenerateTask {
            tools: None,
            input: PromptInput::Chat(vec![
                ChatMessage::new(
                    "system",
                    system_prompt(&view, new_correspondent, open_tags, &examples),
                ),
                ChatMessage::new("user", content.trim()),
            ]),
            sampling: SamplingParams::greedy(),
            num_predict: Some(256),
            num_ctx: Some(num_ctx),
            stop: vec![],
            truncate: true,
            format: Some(Format::Schema(schema(
                &view,
                &dates,
                new_correspondent,
                open_tags,
            ))),
        };
        let mut sub = self.engine.generate(job.model, task, None).await?;
        let mut text = String::new();
        while let Some(ev) = sub.events.recv().await {
            match ev {
                Event::Text(t) => text.push_str(&t),
                Event::Logprobs(_) => {}
                Event::Done(g) => {
                    let answer: Suggestion = serde_json::from_str(&text)
                        .map_err(|e| ClassifyError::BadAnswer(format!("{e}: {text}")))?;
                    let (suggestion, explanation) =
                        merge(answer, decided, dates.first().cloned(), neighbours, content);
                    return Ok(Classification {
                        suggestion: clean(suggestion, today),
                        explanation,
                        prompt_tokens: g.completion.prompt_tokens,
                        output_tokens: g.completion.tokens.len(),
                        truncated: g.truncated,
                        latency: start.elapsed(),
                    });
                }
                Event::Error(e) => return Err(e.into()),
                Event::Embeddings { .. } => {}
            }
        }
        Err(EngineError::WorkerGone.into())
    }
}

/// Whether a field is left for the model: a correspondent among several the text names (or
/// one to coin), a type the evidence did not settle, tags the cues cannot judge, or a title
/// when the text has no word for its kind (`title::compose` needs one).
fn needs_model(
    decided: &Decided,
    open: &Taxonomy,
    new_correspondent: bool,
    open_tags: usize,
    content: &str,
) -> bool {
    let correspondent =
        decided.correspondent.is_none() && (new_correspondent || !open.correspondents.is_empty());
    let document_type = decided.document_type.is_none() && !open.document_types.is_empty();
    let tags = open_tags > 0 && !open.tags.is_empty();
    let title = decided
        .type_concept
        .and_then(|c| concepts::type_word(content, c))
        .is_none();
    correspondent || document_type || tags || title
}

/// The evidence's decisions over the model's answer, with the reason for each field.
fn merge(
    answer: Suggestion,
    decided: Decided,
    created: Option<String>,
    neighbours: Vec<Neighbour>,
    content: &str,
) -> (Suggestion, Explanation) {
    let model = |v: &Option<String>| match v {
        Some(_) => Why::new(Source::Model, ""),
        None => Why::new(Source::Nothing, ""),
    };
    let (correspondent, corr_why) = match decided.correspondent {
        Some((name, why)) => (Some(name), why),
        None => (answer.correspondent.clone(), model(&answer.correspondent)),
    };
    let (document_type, type_why) = match decided.document_type {
        Some((name, why)) => (Some(name), why),
        None => (answer.document_type.clone(), model(&answer.document_type)),
    };
    let mut tags: Vec<TagWhy> = decided
        .tags
        .into_iter()
        .map(|(tag, why)| TagWhy { tag, why })
        .collect();
    for tag in answer.tags {
        if !tags.iter().any(|t| t.tag == tag) {
            tags.push(TagWhy {
                tag,
                why: Why::new(Source::Model, ""),
            });
        }
    }
    tags.truncate(MAX_TAGS);
    let created_why = match &created {
        Some(_) => Why::new(Source::Text, "the issue date the text shows"),
        None => Why::new(Source::Nothing, "no date in the text"),
    };
    let mut s = Suggestion {
        title: answer.title,
        correspondent,
        document_type,
        tags: tags.iter().map(|t| t.tag.clone()).collect(),
        created,
    };
    s.title = super::title::compose(content, &s, decided.type_concept);
    let explanation = Explanation {
        correspondent: corr_why,
        document_type: type_why,
        tags,
        created: created_why,
        neighbours,
    };
    (s, explanation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_dedups_tags_and_drops_future_dates() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let s = clean(
            Suggestion {
                title: " Strom ".into(),
                correspondent: None,
                document_type: None,
                tags: vec!["paid".into(), "home".into(), "paid".into()],
                created: Some("2027-05-01".into()),
            },
            today,
        );
        assert_eq!(s.tags, vec!["paid", "home"]);
        assert_eq!(s.created, None);
        assert_eq!(s.title, "Strom");
        let kept = clean(
            Suggestion {
                created: Some("2025-12-31".into()),
                ..s
            },
            today,
        );
        assert_eq!(kept.created.as_deref(), Some("2025-12-31"));
    }

    #[test]
    fn the_evidence_wins_over_the_model_and_says_why() {
        let decided = Decided {
            correspondent: None,
            document_type: Some(("Bill".into(), Why::new(Source::Text, "x"))),
            tags: vec![("Flat".into(), Why::new(Source::Neighbours, "y"))],
            type_concept: None,
            unmapped_tags: vec![],
        };
        let answer = Suggestion {
            title: "Stadtwerke Abschlag".into(),
            correspondent: Some("Stadtwerke".into()),
            document_type: Some("Letter".into()),
            tags: vec!["Flat".into(), "Energy".into()],
            created: None,
        };
        let (s, why) = merge(answer, decided, Some("2024-01-02".into()), vec![], "text");
        assert_eq!(s.document_type.as_deref(), Some("Bill"));
        assert_eq!(s.tags, vec!["Flat", "Energy"]);
        assert_eq!(why.tags[1].why.by, Source::Model);
        assert_eq!(why.correspondent.by, Source::Model);
        assert_eq!(why.document_type.by, Source::Text);
        assert_eq!(s.created.as_deref(), Some("2024-01-02"));
    }
}
