//! The owner's own matching rules: an entry's `match` and `matching_algorithm`, evaluated as
//! Paperless-ngx evaluates them (`documents/matching.py`): any word, all words, the literal
//! phrase, a regular expression, fuzzy. "Auto" (Paperless's own learned classifier) is not a
//! rule here: the archive's neighbours play that part. A rule that fires is the owner's word.

use regex::RegexBuilder;

use super::types::{matching, Named};

/// Regexes from the taxonomy are compiled with a size bound: a rule cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `match` split as Paperless does: quoted phrases stay whole, other words split on spaces.
fn terms(m: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = m.trim();
    while !rest.is_empty() {
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            out.push(q[..end].trim().to_owned());
            rest = q.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
            rest = rest[end..].trim_start();
        }
    }
    out.retain(|t| !t.is_empty());
    out
}

/// `\bterm\b` (spaces inside a phrase match any run of whitespace, as Paperless writes it).
fn word_pattern(term: &str) -> String {
    let parts: Vec<String> = term.split_whitespace().map(regex::escape).collect();
    format!(r"\b{}\b", parts.join(r"\s+"))
}

fn found(pattern: &str, text: &str, insensitive: bool) -> bool {
    RegexBuilder::new(pattern)
        .case_insensitive(insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .is_ok_and(|r| r.is_match(text))
}

/// Letters and digits only, lower-case, single spaces: what fuzzy matching compares.
fn plain(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .to_lowercase();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `entry`'s own rule matches the document's text.
pub fn fires(entry: &Named, text: &str) -> bool {
    let m = entry.match_text.trim();
    if m.is_empty() {
        return false;
    }
    let ci = entry.is_insensitive;
    match entry.matching_algorithm {
        matching::ANY => terms(m).iter().any(|t| found(&word_pattern(t), text, ci)),
        matching::ALL => {
            let t = terms(m);
            !t.is_empty() && t.iter().all(|t| found(&word_pattern(t), text, ci))
        }
        matching::LITERAL => found(&word_pattern(m), text, ci),
        matching::REGEX => found(m, text, ci),
        // Paperless scores rapidfuzz's partial ratio >= 90; the plain phrase inside the plain
        // text is the exact case of that.
        matching::FUZZY => {
            let (p, t) = (plain(m), plain(text));
            !p.is_empty() && t.contains(&p)
        }
        _ => false,
    }
}

/// Indices of `entries` whose rule fires on `text`.
pub fn firing(entries: &[Named], text: &str) -> Vec<usize> {
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| fires(e, text))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(algorithm: i64, m: &str) -> Named {
        Named {
            matching_algorithm: algorithm,
            match_text: m.into(),
            ..Named::new(1, "x")
        }
    }

    #[test]
    fn paperless_algorithms() {
        let text = "Stadtwerke Musterstadt\nIhre Jahresabrechnung Strom 2024";
        assert!(fires(&rule(matching::ANY, "gas strom"), text));
        assert!(!fires(&rule(matching::ANY, "gas wasser"), text));
        assert!(
            !fires(&rule(matching::ANY, "rom"), text),
            "whole words only"
        );
        assert!(fires(&rule(matching::ALL, "stadtwerke strom"), text));
        assert!(!fires(&rule(matching::ALL, "stadtwerke gas"), text));
        assert!(fires(
            &rule(matching::ANY, "\"ihre jahresabrechnung\" x"),
            text
        ));
        assert!(fires(
            &rule(matching::LITERAL, "Stadtwerke Musterstadt"),
            text
        ));
        assert!(!fires(
            &rule(matching::LITERAL, "Musterstadt Stadtwerke"),
            text
        ));
        assert!(fires(
            &rule(matching::REGEX, r"abrechnung\s+strom\s+\d{4}"),
            text
        ));
        assert!(fires(
            &rule(matching::FUZZY, "stadtwerke, musterstadt!"),
            text
        ));
        assert!(!fires(&rule(matching::AUTO, "strom"), text));
        assert!(!fires(&rule(matching::NONE, "strom"), text));
        let mut sensitive = rule(matching::ANY, "STROM");
        sensitive.is_insensitive = false;
        assert!(!fires(&sensitive, text));
    }

    #[test]
    fn bad_or_huge_regexes_never_fire_and_never_panic() {
        assert!(!fires(&rule(matching::REGEX, "(unclosed"), "x"));
        assert!(!fires(&rule(matching::REGEX, "(a{1000}){1000}"), "a"));
    }
}
