//! Dates written in a document, found by pattern and normalised to `YYYY-MM-DD`. The
//! classifier offers the model these as the only choices for `created`: a small model is good
//! at picking which date is the issue date, and bad at converting "17. April 2025" itself.

use chrono::NaiveDate;

const MONTHS: &[(&str, u32)] = &[
    ("januar", 1),
    ("jänner", 1),
    ("january", 1),
    ("jan", 1),
    ("februar", 2),
    ("february", 2),
    ("feb", 2),
    ("märz", 3),
    ("maerz", 3),
    ("march", 3),
    ("mär", 3),
    ("mar", 3),
    ("april", 4),
    ("apr", 4),
    ("mai", 5),
    ("may", 5),
    ("juni", 6),
    ("june", 6),
    ("jun", 6),
    ("juli", 7),
    ("july", 7),
    ("jul", 7),
    ("august", 8),
    ("aug", 8),
    ("september", 9),
    ("sept", 9),
    ("sep", 9),
    ("oktober", 10),
    ("october", 10),
    ("okt", 10),
    ("oct", 10),
    ("november", 11),
    ("nov", 11),
    ("dezember", 12),
    ("december", 12),
    ("dez", 12),
    ("dec", 12),
];

fn month(word: &str) -> Option<u32> {
    let w = word.trim_end_matches('.').to_lowercase();
    MONTHS.iter().find(|(name, _)| *name == w).map(|(_, m)| *m)
}

fn year(s: &str) -> Option<i32> {
    let y: i32 = s.parse().ok()?;
    match s.len() {
        4 if (1900..=2100).contains(&y) => Some(y),
        // Two-digit years on German forms: 00-69 -> 20xx, else 19xx.
        2 => Some(if y < 70 { 2000 + y } else { 1900 + y }),
        _ => None,
    }
}

fn num(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 2)
        .then(|| s.parse().ok())
        .flatten()
}

/// Every date in `text`, in order of first appearance, without repeats.
pub fn date_candidates(text: &str) -> Vec<NaiveDate> {
    let mut out: Vec<NaiveDate> = Vec::new();
    let mut push = |d: Option<NaiveDate>| {
        if let Some(d) = d {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    };
    // Tokens: runs of letters/digits with the separators that dates use kept inside.
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || ",;()[]|\"'".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_end_matches(['.', ':']);
        // 17.04.2025, 17/04/2025, 17-04-2025, 2025-04-17
        for sep in ['.', '/', '-'] {
            let parts: Vec<&str> = w.split(sep).collect();
            if parts.len() == 3 && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())) {
                let d = if parts[0].len() == 4 {
                    year(parts[0])
                        .and_then(|y| NaiveDate::from_ymd_opt(y, num(parts[1])?, num(parts[2])?))
                } else {
                    year(parts[2])
                        .and_then(|y| NaiveDate::from_ymd_opt(y, num(parts[1])?, num(parts[0])?))
                };
                push(d);
            }
        }
        // 17. April 2025 / 17 April 2025
        if let (Some(m), Some(y)) = (
            words.get(i + 1).and_then(|m| month(m)),
            words
                .get(i + 2)
                .and_then(|y| year(y.trim_end_matches(['.', ':']))),
        ) {
            if let Some(day) = num(w) {
                push(NaiveDate::from_ymd_opt(y, m, day));
            }
        }
        // April 17, 2025 (the comma is a separator above, so: April 17 2025)
        if let Some(m) = month(w) {
            if let (Some(day), Some(y)) = (
                words.get(i + 1).and_then(|d| num(d.trim_end_matches('.'))),
                words
                    .get(i + 2)
                    .and_then(|y| year(y.trim_end_matches(['.', ':']))),
            ) {
                push(NaiveDate::from_ymd_opt(y, m, day));
            }
        }
    }
    out
}

/// Words on a date's line that mark it as the issue date, or as some other date.
const ISSUE_LABELS: &[&str] = &[
    "rechnungsdatum",
    "belegdatum",
    "ausstellungsdatum",
    "ausgestellt",
    "erstellt",
    "datum",
    "invoice date",
    "date of invoice",
    "date of issue",
    "issued",
    "bescheiddatum",
    "dated",
];
const OTHER_LABELS: &[&str] = &[
    "bestell",
    "eintritt",
    "ihre nachricht",
    "ihr schreiben",
    "your letter",
    "order",
    "liefer",
    "deliver",
    "geboren",
    "geb.",
    "birth",
    "seit",
    "since",
    "fällig",
    "faellig",
    "due",
    "zahlbar",
    "zeitraum",
    "period",
    "gültig",
    "valid",
    "beginn",
    "ablauf",
    "abbuch",
    "abgebucht",
    "ende",
    "until",
    "bis ",
];

/// `label` starting a word of `line` ("ende" is in "Ende Mai", not in "versendet").
fn has_word(line: &str, label: &str) -> bool {
    line.match_indices(label).any(|(i, _)| {
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
    })
}

/// The dates worth offering as the issue date: those on a line labelled as such if any, else
/// every date except those labelled as something else (order, delivery, due, birth, period,
/// "customer since"), else all of them.
pub fn issue_date_candidates(text: &str) -> Vec<NaiveDate> {
    let all = date_candidates(text);
    let (mut issue, mut other) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let l = line.to_lowercase();
        let found = date_candidates(line);
        if ISSUE_LABELS.iter().any(|k| has_word(&l, k)) {
            issue.extend(found);
        } else if OTHER_LABELS.iter().any(|k| has_word(&l, k)) {
            other.extend(found);
        }
    }
    if !issue.is_empty() {
        return all.into_iter().filter(|d| issue.contains(d)).collect();
    }
    let rest: Vec<NaiveDate> = all.iter().copied().filter(|d| !other.contains(d)).collect();
    if rest.is_empty() {
        all
    } else {
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn finds_german_and_english_dates_in_order() {
        let text =
            "Bestelldatum 14 April 2025\nRechnungsdatum: 17.04.2025, fällig am 01/05/2025.\n\
                    Issued on March 3, 2024; period 2024-01-01 to 31.1.24. Again 17.04.2025.";
        assert_eq!(
            date_candidates(text),
            vec![
                d(2025, 4, 14),
                d(2025, 4, 17),
                d(2025, 5, 1),
                d(2024, 3, 3),
                d(2024, 1, 1),
                d(2024, 1, 31)
            ]
        );
    }

    #[test]
    fn labelled_issue_dates_win_and_other_dates_drop_out() {
        let text = "Bestelldatum 14 April 2025\nRechnungsdatum 17.04.2025\nfällig am 01.05.2025";
        assert_eq!(issue_date_candidates(text), vec![d(2025, 4, 17)]);
        let text = "Kunde seit 01.03.2015\nMünchen, 12.03.2024\nZeitraum 01.01.2024 bis 29.02.2024";
        assert_eq!(issue_date_candidates(text), vec![d(2024, 3, 12)]);
        let text = "Bestellt am: 24. November 2025\nVersendet am: 26.11.2025";
        assert_eq!(issue_date_candidates(text), vec![d(2025, 11, 26)]);
        let text = "Ihre Nachricht vom 21.02.2025\nMünchen, 24.02.2025";
        assert_eq!(issue_date_candidates(text), vec![d(2025, 2, 24)]);
        let text = "geboren am 03.04.1980";
        assert_eq!(
            issue_date_candidates(text),
            vec![d(1980, 4, 3)],
            "nothing better: all stay"
        );
    }

    #[test]
    fn ignores_things_that_are_not_dates() {
        assert!(
            date_candidates("Rechnungsnummer 302-5518842-7713941, 189.99 EUR, 31.02.2024")
                .is_empty()
        );
        assert_eq!(date_candidates("am 3. März 2023:"), vec![d(2023, 3, 3)]);
    }
}
