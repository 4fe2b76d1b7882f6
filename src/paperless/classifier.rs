//! One document in, one suggestion out: a prompt and a JSON Schema built from the instance's
//! taxonomy, and one grammar-constrained engine call. The model can only answer with names
//! that exist (or null), dates that are dates, and at most three tags.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::shortlist;
use crate::engine::{
    ChatMessage, Engine, EngineError, Event, Format, GenerateTask, PromptInput, SamplingParams,
};

/// A named Paperless object (tag, correspondent, document type).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Named {
    pub id: i64,
    pub name: String,
}

/// What a document may be classified into: the instance's tags, correspondents and types,
/// shaped like Paperless's REST objects (extra fields are ignored).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Taxonomy {
    #[serde(default)]
    pub tags: Vec<Named>,
    #[serde(default)]
    pub correspondents: Vec<Named>,
    #[serde(default)]
    pub document_types: Vec<Named>,
}

/// The classifier's answer, by name.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Suggestion {
    pub title: String,
    pub correspondent: Option<String>,
    pub document_type: Option<String>,
    pub tags: Vec<String>,
    pub created: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    pub suggestion: Suggestion,
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
    #[error("the document has no text to classify")]
    Empty,
}

pub const MAX_TAGS: usize = 3;
/// Context for the model's call unless the caller sets one. The decisions taken from the text
/// read all of it; the model sees head and tail. On DEV, 2048 instead of 4096 tokens kept every
/// score and halved the p95 latency (the longest documents are prefill-bound).
pub const CLASSIFY_CTX: usize = 2048;
pub const MAX_TITLE: usize = 80;

/// The item called `name`: the exact spelling first, else ignoring case (Paperless's own
/// uniqueness is case-sensitive, so "finance" may sit next to "Finance").
pub fn by_name<'a>(items: &'a [Named], name: &str) -> Option<&'a Named> {
    items.iter().find(|n| n.name == name).or_else(|| {
        let lower = name.to_lowercase();
        items.iter().find(|n| n.name.to_lowercase() == lower)
    })
}

fn names(items: &[Named]) -> Vec<&str> {
    items.iter().map(|n| n.name.as_str()).collect()
}

/// `enum` of names or null; a bare null when the list is empty (an empty enum is invalid).
fn one_of_or_null(items: &[Named]) -> Value {
    if items.is_empty() {
        json!({"type": "null"})
    } else {
        json!({"anyOf": [{"enum": names(items)}, {"type": "null"}]})
    }
}

/// A name the model may coin (a new correspondent): one line, no quotes, short.
fn coined_name() -> Value {
    json!({"type": "string", "minLength": 2, "maxLength": 64, "pattern": "^[^\\n\"\\\\]+$"})
}

/// The answer's JSON Schema. Property order is generation order: the decisions the text
/// supports most directly come first, the title last, when the model "knows" what it is.
/// `dates` are the dates found in the document: `created` must be one of them or null.
pub fn schema(t: &Taxonomy, dates: &[String], new_correspondent: bool) -> Value {
    let tags = if t.tags.is_empty() {
        json!({"type": "array", "maxItems": 0})
    } else {
        json!({"type": "array", "items": {"enum": names(&t.tags)}, "maxItems": MAX_TAGS})
    };
    let created = if dates.is_empty() {
        json!({"type": "null"})
    } else {
        json!({"anyOf": [{"enum": dates}, {"type": "null"}]})
    };
    let correspondent = if new_correspondent {
        let mut options = vec![coined_name(), json!({"type": "null"})];
        if !t.correspondents.is_empty() {
            options.insert(0, json!({"enum": names(&t.correspondents)}));
        }
        json!({ "anyOf": options })
    } else {
        one_of_or_null(&t.correspondents)
    };
    json!({
        "type": "object",
        "properties": {
            "correspondent": correspondent,
            "document_type": one_of_or_null(&t.document_types),
            "created": created,
            "tags": tags,
            "title": {"type": "string", "minLength": 3, "maxLength": MAX_TITLE, "pattern": "^[^\\n\"\\\\]+$"},
        },
        "required": ["correspondent", "document_type", "created", "tags", "title"],
        "additionalProperties": false,
    })
}

/// Instructions and the taxonomy: never truncated (the engine cuts only the document).
pub fn system_prompt(t: &Taxonomy, new_correspondent: bool) -> String {
    let list = |items: &[Named]| names(items).join(", ");
    let correspondent = if new_correspondent {
        format!(
            "- correspondent: the organisation or person that issued the document: one of {} \
             if it is among them, else its name as written in the document, or null.",
            list(&t.correspondents)
        )
    } else if t.correspondents.is_empty() {
        "- correspondent: null (no known correspondent is named in this document).".to_owned()
    } else {
        format!(
            "- correspondent: the organisation or person that issued the document, chosen \
             from: {}. Use null if the issuer is not in this list.",
            list(&t.correspondents)
        )
    };
    format!(
        "You file scanned documents into a document archive. Read the document and answer \
         with JSON.\n{correspondent}\n\
         - document_type: one of: {}. Use null if none fits.\n\
         - created: the date the document was issued (invoice date, letter date, statement \
         date), from the dates found in it; not an order, delivery, due or birth date. null \
         if it has none.\n\
         {}\n\
         - title: a short title (issuer, kind of document, subject), at most {MAX_TITLE} \
         characters.",
        list(&t.document_types),
        if t.tags.is_empty() {
            "- tags: [] (chosen elsewhere).".to_owned()
        } else {
            format!(
                "- tags: up to {MAX_TAGS} of: {}. Pick only tags that clearly apply.",
                list(&t.tags)
            )
        },
    )
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

/// What the text decides before the model runs (see `lexicon`).
struct Decided {
    document_type: Option<String>,
    tags: Vec<String>,
}

/// The choices the model is given, and what the text already decided: correspondents the
/// text names; the document type and the tags the lexicon recognises. The model then only
/// picks among what is left (types the lexicon does not know, tags it does not know), cut to
/// what fits the context (`shortlist`).
fn narrow(t: &Taxonomy, content: &str, num_ctx: usize) -> (Taxonomy, Decided) {
    let (view, decided) = narrow_by_text(t, content);
    let budget = shortlist::Budget::for_context(
        num_ctx,
        shortlist::list_cost(&view.document_types),
        shortlist::list_cost(&view.correspondents),
    );
    let text_words: std::collections::HashSet<String> =
        shortlist::words(content).into_iter().collect();
    let score = |n: &Named| shortlist::lexical_score(&n.name, &text_words);
    let view = Taxonomy {
        tags: shortlist::fit(&view.tags, budget.tags, score),
        correspondents: shortlist::fit(&view.correspondents, budget.correspondents, score),
        document_types: shortlist::fit(&view.document_types, budget.document_types, score),
    };
    (view, decided)
}

fn narrow_by_text(t: &Taxonomy, content: &str) -> (Taxonomy, Decided) {
    let mut view = narrow_correspondents(t, content);
    let document_type = super::lexicon::document_type(content, &t.document_types)
        .map(|i| t.document_types[i].clone());
    if let Some(d) = &document_type {
        view.document_types = vec![d.clone()];
    }
    let (chosen, unknown) = super::lexicon::tags(content, &t.tags, MAX_TAGS);
    view.tags = if chosen.len() < MAX_TAGS {
        unknown.iter().map(|i| t.tags[*i].clone()).collect()
    } else {
        vec![]
    };
    let decided = Decided {
        document_type: document_type.map(|d| d.name),
        tags: chosen.iter().map(|i| t.tags[*i].name.clone()).collect(),
    };
    (view, decided)
}

/// Only correspondents the text names are offered (or null). A document that names none of
/// them gets null: an issuer missing from the taxonomy must not become the closest-sounding
/// name.
fn narrow_correspondents(t: &Taxonomy, content: &str) -> Taxonomy {
    let all: Vec<&str> = names(&t.correspondents);
    let found = super::evidence::mentioned(content, &all);
    Taxonomy {
        correspondents: found.iter().map(|i| t.correspondents[*i].clone()).collect(),
        ..t.clone()
    }
}

/// Classifies `content` with one constrained engine call.
pub async fn classify(
    engine: &Engine,
    model: &str,
    taxonomy: &Taxonomy,
    content: &str,
    num_ctx: Option<usize>,
    new_correspondent: bool,
) -> Result<Classification, ClassifyError> {
    if content.trim().is_empty() {
        return Err(ClassifyError::Empty);
    }
    let start = Instant::now();
    let today = chrono::Utc::now().date_naive();
    // The first date on an issue-date line (else the first not labelled as something else)
    // is the answer: on DEV it is right far more often than the model's pick among them.
    let dates: Vec<String> = super::dates::issue_date_candidates(content)
        .into_iter()
        .filter(|d| *d <= today)
        .take(1)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect();
    let num_ctx = num_ctx.unwrap_or(CLASSIFY_CTX);
    let (view, decided) = narrow(taxonomy, content, num_ctx);
    // With nothing named, a new name may be coined (when allowed); otherwise null.
    let new_correspondent = new_correspondent && view.correspondents.is_empty();
    let taxonomy = &view;
    let task = GenerateTask {
        input: PromptInput::Chat(vec![
            ChatMessage::new("system", system_prompt(taxonomy, new_correspondent)),
            ChatMessage::new("user", content.trim()),
        ]),
        sampling: SamplingParams::greedy(),
        num_predict: Some(256),
        num_ctx: Some(num_ctx),
        stop: vec![],
        truncate: true,
        format: Some(Format::Schema(schema(taxonomy, &dates, new_correspondent))),
    };
    let mut sub = engine.generate(model, task, None).await?;
    let mut text = String::new();
    while let Some(ev) = sub.events.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(g) => {
                let mut suggestion: Suggestion = serde_json::from_str(&text)
                    .map_err(|e| ClassifyError::BadAnswer(format!("{e}: {text}")))?;
                if decided.document_type.is_some() {
                    suggestion.document_type = decided.document_type;
                }
                let from_model = std::mem::take(&mut suggestion.tags);
                suggestion.tags = decided.tags.into_iter().chain(from_model).collect();
                suggestion.created = dates.first().cloned();
                suggestion.title = super::title::compose(content, &suggestion);
                return Ok(Classification {
                    suggestion: clean(suggestion, today),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn taxonomy() -> Taxonomy {
        let n = |id, name: &str| Named {
            id,
            name: name.into(),
        };
        Taxonomy {
            tags: vec![n(1, "paid"), n(2, "home")],
            correspondents: vec![n(1, "Stadtwerke München")],
            document_types: vec![n(1, "Invoice")],
        }
    }

    #[test]
    fn schema_offers_exactly_the_taxonomy() {
        let s = schema(&taxonomy(), &["2024-03-12".to_string()], false);
        assert_eq!(
            s["properties"]["created"]["anyOf"][0]["enum"],
            json!(["2024-03-12"])
        );
        assert_eq!(
            s["properties"]["correspondent"]["anyOf"][0]["enum"],
            json!(["Stadtwerke München"])
        );
        assert_eq!(
            s["properties"]["tags"]["items"]["enum"],
            json!(["paid", "home"])
        );
        assert_eq!(s["properties"]["tags"]["maxItems"], 3);
        let empty = schema(&Taxonomy::default(), &[], false);
        assert_eq!(empty["properties"]["created"], json!({"type": "null"}));
        assert_eq!(
            empty["properties"]["correspondent"],
            json!({"type": "null"})
        );
        assert_eq!(empty["properties"]["tags"]["maxItems"], 0);
        let coin = schema(&Taxonomy::default(), &[], true);
        assert_eq!(
            coin["properties"]["correspondent"]["anyOf"][0]["type"],
            "string"
        );
        assert_eq!(
            coin["properties"]["correspondent"]["anyOf"][1]["type"],
            "null"
        );
    }

    #[test]
    fn prompt_lists_every_name() {
        let p = system_prompt(&taxonomy(), false);
        for name in ["Stadtwerke München", "Invoice", "paid", "home"] {
            assert!(p.contains(name), "{name}");
        }
        let none = system_prompt(
            &Taxonomy {
                correspondents: vec![],
                ..taxonomy()
            },
            false,
        );
        assert!(none.contains("correspondent: null"), "{none}");
    }

    #[test]
    fn only_correspondents_named_in_the_text_are_offered() {
        let t = taxonomy();
        let named = narrow_correspondents(&t, "STADTWERKE MÜNCHEN GmbH, Rechnung");
        assert_eq!(named.correspondents, t.correspondents);
        assert!(narrow_correspondents(&t, "Allianz Versicherung")
            .correspondents
            .is_empty());
    }

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
    fn by_name_prefers_the_exact_spelling() {
        let items = vec![
            Named {
                id: 1,
                name: "finance".into(),
            },
            Named {
                id: 2,
                name: "Finance".into(),
            },
        ];
        assert_eq!(by_name(&items, "Finance").unwrap().id, 2);
        assert_eq!(by_name(&items, "FINANCE").unwrap().id, 1);
        assert!(by_name(&items, "Tax").is_none());
    }
}
