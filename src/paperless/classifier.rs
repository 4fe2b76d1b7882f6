//! One document in, one suggestion out, with the reason for every field. The evidence — the
//! owner's matching rules, the labels of the owner's most similar documents, what the text
//! shows (names, cue words, dates) — decides what it can (`fusion.rs`); one
//! grammar-constrained model call decides the rest among the choices left, with the nearest
//! labelled documents as examples. Nothing is keyed on how the taxonomy spells its entries:
//! cue concepts reach the owner's entries by meaning (`meaning.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::concepts::{self, TOPICS, TYPES};
use super::facts::{self, Found, FACTS};
use super::fields::CustomField;
use super::filed::{self, Lift};
use super::fusion::{self, Source, TagEvidence, Why};
use super::meaning::{by_filing, cosine, map_entries, Encoder};
use super::neighbours::{embedding_text, Neighbour, Neighbours};
use super::prompt::{schema, system_prompt, Extras};
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<Why>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_fields: BTreeMap<String, Why>,
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
    /// Custom fields to extract (of the taxonomy's); a storage path is suggested whenever
    /// the taxonomy has storage paths.
    pub fields: &'a [CustomField],
}

/// How one custom field's value is found.
struct FieldPlan {
    field: CustomField,
    found: Found,
    /// The fact its name means (`facts::FACTS`).
    fact: Option<usize>,
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
    storage_path: Option<(String, Why)>,
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
            storage_path: Self::storage_path(t, text, neighbours),
            unmapped_tags,
            correspondent: correspondent.map(|(i, why)| (t.correspondents[i].name.clone(), why)),
            document_type: document_type.map(|(i, why)| (t.document_types[i].name.clone(), why)),
            tags,
            type_concept,
        })
    }

    /// For each field, the fact its name means, if any: by the encoder, among the facts its
    /// type can hold, when the name is clearly closer to the fact than to names that mean
    /// nothing (`facts::NEUTRAL`); one field per fact. Without an encoder, none: the model
    /// chooses among the text's values.
    async fn field_facts(&self, fields: &[CustomField]) -> Result<Vec<Option<usize>>, EngineError> {
        let Some(enc) = &self.encoder else {
            return Ok(vec![None; fields.len()]);
        };
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let r = self.field_scores(enc, fields).await;
        let scores = self.without_missing_encoder(r, Vec::new())?;
        if scores.is_empty() {
            return Ok(vec![None; fields.len()]);
        }
        Ok(facts::assign(&scores))
    }

    /// `scores[field][fact]`: how much closer the field's name is to the fact than to the
    /// closest neutral phrase, where the type fits and the margin is enough.
    async fn field_scores(
        &self,
        enc: &Encoder,
        fields: &[CustomField],
    ) -> Result<Vec<Vec<Option<f32>>>, EngineError> {
        let phrases: Vec<Vec<String>> = FACTS.iter().map(facts::phrases).collect();
        let all: Vec<&str> = phrases
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(facts::NEUTRAL.iter().copied())
            .collect();
        let vectors = enc.embed(&all).await?;
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        let name_vectors = enc.embed(&names).await?;
        let neutral = &vectors[vectors.len() - facts::NEUTRAL.len()..];
        let closest = |v: &[f32], set: &[std::sync::Arc<Vec<f32>>]| {
            set.iter()
                .map(|x| cosine(v, x))
                .fold(f32::NEG_INFINITY, f32::max)
        };
        Ok(fields
            .iter()
            .zip(&name_vectors)
            .map(|(f, v)| {
                let fit = facts::fitting(&f.data_type);
                let base = closest(v, neutral);
                let mut at = 0;
                phrases
                    .iter()
                    .enumerate()
                    .map(|(j, p)| {
                        let set = &vectors[at..at + p.len()];
                        at += p.len();
                        let margin = closest(v, set) - base;
                        (fit.contains(&j) && margin >= facts::MIN_MARGIN).then_some(margin)
                    })
                    .collect()
            })
            .collect())
    }

    /// The storage path the owner's rule or the similar documents settle.
    fn storage_path(t: &Taxonomy, text: &str, neighbours: &[Neighbour]) -> Option<(String, Why)> {
        if t.storage_paths.is_empty() {
            return None;
        }
        if let Some(&i) = rules::firing(&t.storage_paths, text).first() {
            let why = Why::new(Source::Rule, "its matching rule fired");
            return Some((t.storage_paths[i].name.clone(), why));
        }
        let names = names(&t.storage_paths);
        let w = fusion::weights(neighbours);
        let shares = fusion::shares(&names, neighbours, &w, |n| {
            n.storage_path.as_deref().into_iter().collect()
        });
        let (i, share) = shares
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        (share >= 0.5).then(|| {
            let why = Why::new(
                Source::Neighbours,
                format!("where the most similar documents are filed ({share:.2})"),
            );
            (t.storage_paths[i].name.clone(), why)
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
        // Storage paths are few (a path per area of life): offered whole.
        let storage_paths = match decided.storage_path {
            Some(_) => Vec::new(),
            None => t.storage_paths.clone(),
        };
        Taxonomy {
            tags: shortlist::fit(&tags, budget.tags, score),
            correspondents: shortlist::fit(&correspondents, budget.correspondents, score),
            document_types: shortlist::fit(&document_types, budget.document_types, score),
            storage_paths,
            custom_fields: Vec::new(),
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
        // A field's date may lie ahead (a due date, a contract's end), unlike `created`. Read
        // only when fields are asked for: most documents have none.
        let all_dates = if job.fields.is_empty() {
            Vec::new()
        } else {
            super::dates::date_candidates(content)
        };
        // The text's own word for the document's kind composes the title (`title::compose`).
        let title_from_text = decided
            .type_concept
            .and_then(|c| concepts::type_word(content, c))
            .is_some();
        let fields: Vec<FieldPlan> = self
            .field_facts(job.fields)
            .await?
            .into_iter()
            .zip(job.fields)
            .map(|(fact, f)| FieldPlan {
                found: match facts::find(f, fact.map(|j| &FACTS[j]), content, &all_dates) {
                    Found::Judge => by_neighbours(&f.name, &neighbours).unwrap_or(Found::Judge),
                    found => found,
                },
                field: f.clone(),
                fact,
            })
            .collect();
        let extras = Extras {
            storage_paths: (!view.storage_paths.is_empty()).then(|| view.storage_paths.clone()),
            fields: fields
                .iter()
                .filter(|p| {
                    matches!(&p.found, Found::Judge)
                        || matches!(&p.found, Found::Choose(v) if !v.is_empty())
                })
                .map(|p| {
                    (
                        p.field.name.clone(),
                        facts::choice_schema(&p.field, &p.found),
                    )
                })
                .collect(),
            no_title: title_from_text,
        };
        // With nothing named, a new name may be coined (when allowed); otherwise null.
        let new_correspondent = job.new_correspondent && view.correspondents.is_empty();
        let open_tags = MAX_TAGS - decided.tags.len().min(MAX_TAGS);
        let asks_extras = extras.storage_paths.is_some() || !extras.fields.is_empty();
        if !asks_extras
            && !needs_model(
                &decided,
                &view,
                new_correspondent,
                open_tags,
                title_from_text,
            )
        {
            // The evidence decided every field: the model's call would only repeat it.
            let (suggestion, explanation) = merge(
                Suggestion::default(),
                decided,
                dates.first().cloned(),
                neighbours,
                content,
                fields,
            );
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
                    system_prompt(&view, new_correspondent, open_tags, &examples, &extras),
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
                &extras,
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
                    let (suggestion, explanation) = merge(
                        answer,
                        decided,
                        dates.first().cloned(),
                        neighbours,
                        content,
                        fields,
                    );
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
    title_from_text: bool,
) -> bool {
    let correspondent =
        decided.correspondent.is_none() && (new_correspondent || !open.correspondents.is_empty());
    let document_type = decided.document_type.is_none() && !open.document_types.is_empty();
    let tags = open_tags > 0 && !open.tags.is_empty();
    correspondent || document_type || tags || !title_from_text
}

/// A judged field (a select option, yes or no) the owner's most similar documents settle:
/// the value with half their weight or more, ahead of every other. Facts of the text
/// (amounts, numbers, dates) are each document's own and are never taken from other
/// documents.
fn by_neighbours(field: &str, neighbours: &[Neighbour]) -> Option<Found> {
    let w = fusion::weights(neighbours);
    let mut shares: Vec<(serde_json::Value, f32)> = Vec::new();
    for (n, w) in neighbours.iter().zip(&w) {
        let Some(v) = n.custom_fields.get(field) else {
            continue;
        };
        match shares.iter_mut().find(|(x, _)| x == v) {
            Some((_, s)) => *s += w,
            None => shares.push((v.clone(), *w)),
        }
    }
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    let runner_up = shares.get(1).map_or(0.0, |s| s.1);
    let (v, share) = shares.into_iter().next()?;
    // Half the weight or more, and no tie.
    (share >= 0.5 && share > runner_up).then_some(Found::Neighbours(v, share))
}

/// Each field's value: what the text labels, else the model's choice (checked once more by
/// Paperless's rules), else null; with the reason.
fn field_values(
    fields: Vec<FieldPlan>,
    answer: &BTreeMap<String, serde_json::Value>,
) -> (BTreeMap<String, serde_json::Value>, BTreeMap<String, Why>) {
    let mut values = BTreeMap::new();
    let mut whys = BTreeMap::new();
    for p in fields {
        let meaning = p
            .fact
            .map(|j| format!(" (read as the {})", FACTS[j].concept.key.replace('_', " ")))
            .unwrap_or_default();
        let (v, why) = match p.found {
            Found::Labelled(v, label) => (
                v,
                Why::new(
                    Source::Text,
                    format!("the text labels it \"{label}\"{meaning}"),
                ),
            ),
            Found::Neighbours(v, share) => (
                v,
                Why::new(
                    Source::Neighbours,
                    format!("the value of the most similar documents ({share:.2})"),
                ),
            ),
            Found::NotExtracted => (
                serde_json::Value::Null,
                Why::new(
                    Source::Nothing,
                    "free text and document links are not extracted",
                ),
            ),
            Found::Choose(v) if v.is_empty() => {
                let detail = if p.fact.is_some() {
                    format!("the text does not label it{meaning}")
                } else {
                    "the text states no value of its type".to_owned()
                };
                (serde_json::Value::Null, Why::new(Source::Nothing, detail))
            }
            Found::Choose(_) | Found::Judge => {
                let v = answer
                    .get(&p.field.name)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                match p.field.to_paperless(&v) {
                    Ok(_) if !v.is_null() => (v, Why::new(Source::Model, "")),
                    Ok(_) => (v, Why::new(Source::Nothing, "the model found none")),
                    Err(e) => (
                        serde_json::Value::Null,
                        Why::new(Source::Nothing, e.to_string()),
                    ),
                }
            }
        };
        values.insert(p.field.name.clone(), v);
        whys.insert(p.field.name, why);
    }
    (values, whys)
}

/// The evidence's decisions over the model's answer, with the reason for each field.
fn merge(
    answer: Suggestion,
    decided: Decided,
    created: Option<String>,
    neighbours: Vec<Neighbour>,
    content: &str,
    fields: Vec<FieldPlan>,
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
    let (storage_path, path_why) = match decided.storage_path {
        Some((name, why)) => (Some(name), Some(why)),
        None => match &answer.storage_path {
            Some(p) => (Some(p.clone()), Some(Why::new(Source::Model, ""))),
            None => (None, None),
        },
    };
    let (custom_fields, field_whys) = field_values(fields, &answer.custom_fields);
    let mut s = Suggestion {
        title: answer.title,
        correspondent,
        document_type,
        tags: tags.iter().map(|t| t.tag.clone()).collect(),
        created,
        storage_path,
        custom_fields,
    };
    s.title = super::title::compose(content, &s, decided.type_concept);
    let explanation = Explanation {
        correspondent: corr_why,
        document_type: type_why,
        tags,
        created: created_why,
        storage_path: path_why,
        custom_fields: field_whys,
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
                ..Suggestion::default()
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
    fn the_storage_path_comes_from_the_rule_then_the_similar_documents() {
        let mut by_rule = Named::new(1, "Haus");
        by_rule.matching_algorithm = super::super::types::matching::ANY;
        by_rule.match_text = "Zählernummer".into();
        let t = Taxonomy {
            storage_paths: vec![by_rule, Named::new(2, "Auto")],
            ..Taxonomy::default()
        };
        let near = |path: &str| Neighbour {
            id: String::new(),
            similarity: 0.95,
            content: String::new(),
            correspondent: None,
            document_type: None,
            tags: vec![],
            storage_path: Some(path.into()),
            custom_fields: [("Zahlweise".to_owned(), serde_json::json!(path))].into(),
        };
        let (name, why) = Classifier::storage_path(&t, "Zählernummer 12", &[near("Auto")]).unwrap();
        assert_eq!((name.as_str(), why.by), ("Haus", Source::Rule));
        let (name, why) =
            Classifier::storage_path(&t, "Inspektion", &[near("Auto"), near("Auto")]).unwrap();
        assert_eq!((name.as_str(), why.by), ("Auto", Source::Neighbours));
        assert!(
            Classifier::storage_path(&t, "Inspektion", &[]).is_none(),
            "left to the model"
        );
        assert!(Classifier::storage_path(&Taxonomy::default(), "x", &[near("Auto")]).is_none());
        // A select field the similar documents agree on; none when they disagree or lack it.
        assert_eq!(
            by_neighbours("Zahlweise", &[near("Auto"), near("Auto")]),
            Some(Found::Neighbours(serde_json::json!("Auto"), 1.0))
        );
        assert_eq!(
            by_neighbours("Zahlweise", &[near("Auto"), near("Haus")]),
            None
        );
        assert_eq!(by_neighbours("Status", &[near("Auto")]), None);
    }

    #[test]
    fn field_values_keep_only_what_paperless_accepts_and_say_why() {
        let field = |id: i64, name: &str, t: &str| {
            CustomField::from_paperless(
                &serde_json::json!({"id": id, "name": name, "data_type": t}),
            )
            .unwrap()
        };
        let plans = vec![
            FieldPlan {
                field: field(1, "Betrag", "monetary"),
                found: Found::Labelled(serde_json::json!("EUR1.00"), "Summe".into()),
                fact: Some(0),
            },
            FieldPlan {
                field: field(2, "Datum", "date"),
                found: Found::Choose(vec![serde_json::json!("2024-01-02")]),
                fact: None,
            },
            FieldPlan {
                field: field(3, "Anzahl", "integer"),
                found: Found::Choose(vec![serde_json::json!(3)]),
                fact: None,
            },
            FieldPlan {
                field: field(4, "Notiz", "longtext"),
                found: Found::NotExtracted,
                fact: None,
            },
        ];
        // The model answered a date and, impossibly, an integer out of range.
        let answer: BTreeMap<String, serde_json::Value> = [
            ("Datum".to_owned(), serde_json::json!("2024-01-02")),
            ("Anzahl".to_owned(), serde_json::json!(1i64 << 40)),
        ]
        .into();
        let (values, whys) = field_values(plans, &answer);
        assert_eq!(values["Betrag"], "EUR1.00");
        assert_eq!(whys["Betrag"].by, Source::Text);
        assert_eq!(values["Datum"], "2024-01-02");
        assert_eq!(whys["Datum"].by, Source::Model);
        assert!(values["Anzahl"].is_null() && values["Notiz"].is_null());
        assert_eq!(values.len(), 4);
    }

    #[test]
    fn the_evidence_wins_over_the_model_and_says_why() {
        let decided = Decided {
            correspondent: None,
            document_type: Some(("Bill".into(), Why::new(Source::Text, "x"))),
            tags: vec![("Flat".into(), Why::new(Source::Neighbours, "y"))],
            type_concept: None,
            unmapped_tags: vec![],
            storage_path: None,
        };
        let answer = Suggestion {
            title: "Stadtwerke Abschlag".into(),
            correspondent: Some("Stadtwerke".into()),
            document_type: Some("Letter".into()),
            tags: vec!["Flat".into(), "Energy".into()],
            ..Suggestion::default()
        };
        let (s, why) = merge(
            answer,
            decided,
            Some("2024-01-02".into()),
            vec![],
            "text",
            vec![],
        );
        assert_eq!(s.document_type.as_deref(), Some("Bill"));
        assert_eq!(s.tags, vec!["Flat", "Energy"]);
        assert_eq!(why.tags[1].why.by, Source::Model);
        assert_eq!(why.correspondent.by, Source::Model);
        assert_eq!(why.document_type.by, Source::Text);
        assert_eq!(s.created.as_deref(), Some("2024-01-02"));
    }
}
