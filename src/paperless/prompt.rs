//! The one constrained model call: its JSON Schema, built from the choices left open, and its
//! instructions, with the nearest labelled documents as worked examples. The model can only
//! answer with names that exist (or null), dates found in the text, and at most three tags.

use serde_json::{json, Value};

use super::neighbours::Neighbour;
use super::types::{Named, Taxonomy};

pub const MAX_TAGS: usize = 3;
pub const MAX_TITLE: usize = 80;
/// Characters of a neighbour's text shown as an example.
const EXAMPLE_CHARS: usize = 240;

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

/// What the model is asked beyond the taxonomy's fields: the storage path (when the owner's
/// storage paths are offered and the evidence left it open) and custom fields, each with the
/// schema of its value (`facts::choice_schema`).
#[derive(Debug, Default)]
pub struct Extras {
    pub storage_paths: Option<Vec<Named>>,
    pub fields: Vec<(String, Value)>,
    /// The title is composed from the text (`title::compose`): the model is not asked for
    /// one, which saves the twenty-odd tokens it would write.
    pub no_title: bool,
}

/// The answer's JSON Schema. Property order is generation order: the decisions the text
/// supports most directly come first, the title last, when the model "knows" what it is.
/// `dates` are the dates found in the document: `created` must be one of them or null.
pub fn schema(
    t: &Taxonomy,
    dates: &[String],
    new_correspondent: bool,
    max_tags: usize,
    extras: &Extras,
) -> Value {
    let tags = if t.tags.is_empty() || max_tags == 0 {
        json!({"type": "array", "maxItems": 0})
    } else {
        json!({"type": "array", "items": {"enum": names(&t.tags)}, "maxItems": max_tags})
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
    let mut properties = serde_json::Map::new();
    properties.insert("correspondent".into(), correspondent);
    properties.insert("document_type".into(), one_of_or_null(&t.document_types));
    properties.insert("created".into(), created);
    properties.insert("tags".into(), tags);
    if let Some(paths) = &extras.storage_paths {
        properties.insert("storage_path".into(), one_of_or_null(paths));
    }
    if !extras.fields.is_empty() {
        let names: Vec<&str> = extras.fields.iter().map(|(n, _)| n.as_str()).collect();
        let values: serde_json::Map<String, Value> = extras.fields.iter().cloned().collect();
        properties.insert(
            "custom_fields".into(),
            json!({"type": "object", "properties": values, "required": names,
                   "additionalProperties": false}),
        );
    }
    if !extras.no_title {
        properties.insert(
            "title".into(),
            json!({"type": "string", "minLength": 3, "maxLength": MAX_TITLE, "pattern": "^[^\\n\"\\\\]+$"}),
        );
    }
    let required: Vec<String> = properties.keys().cloned().collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The first `n` characters of `text`, on one line.
fn snippet(text: &str, n: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(n).collect()
}

/// Instructions, the open choices, and up to two similar labelled documents: never truncated
/// (the engine cuts only the document).
pub fn system_prompt(
    t: &Taxonomy,
    new_correspondent: bool,
    max_tags: usize,
    examples: &[&Neighbour],
    extras: &Extras,
) -> String {
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
    let tags = if t.tags.is_empty() || max_tags == 0 {
        "- tags: [] (chosen elsewhere).".to_owned()
    } else {
        format!(
            "- tags: up to {max_tags} of: {}. Pick only tags that clearly apply.",
            list(&t.tags)
        )
    };
    let mut prompt = format!(
        "You file scanned documents into a document archive. Read the document and answer \
         with JSON.\n{correspondent}\n\
         - document_type: one of: {}. Use null if none fits.\n\
         - created: the date the document was issued (invoice date, letter date, statement \
         date), from the dates found in it; not an order, delivery, due or birth date. null \
         if it has none.\n\
         {tags}",
        list(&t.document_types),
    );
    if !extras.no_title {
        prompt.push_str(&format!(
            "\n- title: a short title (issuer, kind of document, subject), at most \
             {MAX_TITLE} characters."
        ));
    }
    if let Some(paths) = &extras.storage_paths {
        prompt.push_str(&format!(
            "\n- storage_path: where the document is filed, one of: {}. Use null if none fits.",
            list(paths)
        ));
    }
    for (name, _) in &extras.fields {
        prompt.push_str(&format!(
            "\n- custom_fields.{name}: the document's \"{name}\" as the document states it, \
             from the values offered; null if the document does not state it."
        ));
    }
    for e in examples.iter().take(2) {
        prompt.push_str(&format!(
            "\nA similar document from this archive: \"{}…\" was filed as document_type {}, \
             tags [{}].",
            snippet(&e.content, EXAMPLE_CHARS),
            e.document_type.as_deref().unwrap_or("null"),
            e.tags.join(", ")
        ));
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taxonomy() -> Taxonomy {
        Taxonomy {
            tags: vec![Named::new(1, "paid"), Named::new(2, "home")],
            correspondents: vec![Named::new(1, "Stadtwerke München")],
            document_types: vec![Named::new(1, "Invoice")],
            ..Taxonomy::default()
        }
    }

    #[test]
    fn schema_offers_exactly_the_taxonomy() {
        let s = schema(
            &taxonomy(),
            &["2024-03-12".to_string()],
            false,
            3,
            &Extras::default(),
        );
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
        let empty = schema(&Taxonomy::default(), &[], false, 3, &Extras::default());
        assert_eq!(empty["properties"]["created"], json!({"type": "null"}));
        assert_eq!(
            empty["properties"]["correspondent"],
            json!({"type": "null"})
        );
        assert_eq!(empty["properties"]["tags"]["maxItems"], 0);
        let coin = schema(&Taxonomy::default(), &[], true, 3, &Extras::default());
        assert_eq!(
            coin["properties"]["correspondent"]["anyOf"][0]["type"],
            "string"
        );
    }

    #[test]
    fn a_title_composed_from_the_text_is_not_asked_for() {
        let extras = Extras {
            no_title: true,
            ..Extras::default()
        };
        let s = schema(&taxonomy(), &[], false, 3, &extras);
        assert!(s["properties"].get("title").is_none());
        assert!(!s["required"].as_array().unwrap().contains(&json!("title")));
        assert!(!system_prompt(&taxonomy(), false, 3, &[], &extras).contains("title"));
        let asked = schema(&taxonomy(), &[], false, 3, &Extras::default());
        assert_eq!(
            asked["required"].as_array().unwrap().last(),
            Some(&json!("title"))
        );
        let answer: super::super::types::Suggestion = serde_json::from_value(json!({
            "correspondent": null, "document_type": "Invoice", "created": null, "tags": []}))
        .unwrap();
        assert_eq!(answer.title, "", "an answer without a title parses");
    }

    #[test]
    fn prompt_lists_every_name_and_the_examples() {
        let example = Neighbour {
            id: "7".into(),
            similarity: 0.9,
            content: "Stadtwerke München\nIhre Stromrechnung".into(),
            correspondent: None,
            document_type: Some("Invoice".into()),
            tags: vec!["home".into()],
            storage_path: None,
            custom_fields: Default::default(),
        };
        let p = system_prompt(&taxonomy(), false, 3, &[&example], &Extras::default());
        for name in [
            "Stadtwerke München",
            "Invoice",
            "paid",
            "home",
            "Ihre Stromrechnung",
        ] {
            assert!(p.contains(name), "{name}");
        }
        let none = system_prompt(
            &Taxonomy {
                correspondents: vec![],
                ..taxonomy()
            },
            false,
            3,
            &[],
            &Extras::default(),
        );
        assert!(none.contains("correspondent: null"), "{none}");
    }
}
