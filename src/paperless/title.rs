//! Titles a person would give: "<correspondent> <the document's own word for what it is>
//! <month year>", e.g. "Deutsche Telekom Mobilfunkrechnung März 2025". The small model's own
//! titles are kept only when the text offers nothing better and they are not degenerate
//! (a 135M model at temperature 0 likes to repeat a date until the length limit).

use chrono::{Datelike, NaiveDate};

use super::concepts::type_word;
use super::prompt::MAX_TITLE;
use super::types::Suggestion;

const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// German when its common words outnumber the English ones.
fn is_german(text: &str) -> bool {
    let (mut de, mut en) = (0, 0);
    for w in text.split_whitespace().take(400) {
        match w.to_lowercase().as_str() {
            "der" | "die" | "das" | "und" | "für" | "ihre" | "ihr" | "mit" | "von" | "wir" => {
                de += 1
            }
            "the" | "and" | "for" | "your" | "you" | "with" | "of" | "we" | "to" => en += 1,
            _ => {}
        }
    }
    de >= en
}

/// A title that repeats one word three times or more is a loop, not a title.
fn degenerate(title: &str) -> bool {
    let words: Vec<String> = title
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words
        .iter()
        .any(|w| words.iter().filter(|x| *x == w).count() >= 3)
}

/// The title for suggestion `s`; `type_concept` is the kind of document decided (a
/// [`super::concepts::TYPES`] index), whose cue words find the document's own word for it.
pub fn compose(content: &str, s: &Suggestion, type_concept: Option<usize>) -> String {
    let kind = type_concept
        .and_then(|c| type_word(content, c))
        .map(|w| capitalise(&w));
    if kind.is_none() && !s.title.is_empty() && !degenerate(&s.title) {
        return s.title.clone();
    }
    let kind = kind.or_else(|| s.document_type.clone());
    let period = s
        .created
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .map(|d| {
            let months = if is_german(content) {
                MONTHS_DE
            } else {
                MONTHS_EN
            };
            format!("{} {}", months[d.month0() as usize], d.year())
        });
    let parts: Vec<String> = [s.correspondent.clone(), kind, period]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        return s.title.clone();
    }
    parts.join(" ").chars().take(MAX_TITLE).collect()
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(title: &str, corr: Option<&str>, kind: Option<&str>, created: Option<&str>) -> Suggestion {
        Suggestion {
            title: title.into(),
            correspondent: corr.map(Into::into),
            document_type: kind.map(Into::into),
            tags: vec![],
            created: created.map(Into::into),
            ..Suggestion::default()
        }
    }

    fn invoice() -> Option<usize> {
        super::super::concepts::TYPES
            .iter()
            .position(|c| c.key == "invoice")
    }

    #[test]
    fn composed_from_issuer_own_word_and_month() {
        let text = "Telekom Deutschland GmbH\nIhre Mobilfunkrechnung für März 2025 und die Details";
        let t = compose(
            text,
            &s(
                "x",
                Some("Deutsche Telekom"),
                Some("Invoice"),
                Some("2025-03-12"),
            ),
            invoice(),
        );
        assert_eq!(t, "Deutsche Telekom Mobilfunkrechnung März 2025");
        let en = "Your invoice for the hosting of your website";
        assert_eq!(
            compose(
                en,
                &s("x", None, Some("Invoice"), Some("2014-07-31")),
                invoice()
            ),
            "Invoice July 2014"
        );
    }

    #[test]
    fn the_models_title_only_when_it_is_not_a_loop() {
        let flyer = "Pizza Roma: zwei für eins";
        assert_eq!(
            compose(flyer, &s("Pizza Roma Angebot", None, None, None), None),
            "Pizza Roma Angebot"
        );
        let looped = "2026-01-01_2026-01-01_2026-01-01";
        assert_eq!(
            compose(
                flyer,
                &s(looped, None, Some("Flyer"), Some("2026-01-01")),
                None
            ),
            "Flyer Januar 2026"
        );
    }
}
