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
    // French
    ("janvier", 1),
    ("janv", 1),
    ("février", 2),
    ("fevrier", 2),
    ("févr", 2),
    ("fevr", 2),
    ("mars", 3),
    ("avril", 4),
    ("avr", 4),
    ("juin", 6),
    ("juillet", 7),
    ("juil", 7),
    ("août", 8),
    ("aout", 8),
    ("septembre", 9),
    ("octobre", 10),
    ("novembre", 11),
    ("décembre", 12),
    ("decembre", 12),
    ("déc", 12),
    // Polish, as dates write them (genitive) and as headings do (nominative)
    ("stycznia", 1),
    ("styczeń", 1),
    ("lutego", 2),
    ("luty", 2),
    ("marca", 3),
    ("marzec", 3),
    ("kwietnia", 4),
    ("kwiecień", 4),
    ("maja", 5),
    ("maj", 5),
    ("czerwca", 6),
    ("czerwiec", 6),
    ("lipca", 7),
    ("lipiec", 7),
    ("sierpnia", 8),
    ("sierpień", 8),
    ("września", 9),
    ("wrzesień", 9),
    ("października", 10),
    ("październik", 10),
    ("listopada", 11),
    ("listopad", 11),
    ("grudnia", 12),
    ("grudzień", 12),
];

fn month(word: &str) -> Option<u32> {
    let w = word.trim_end_matches(['.', ',']).to_lowercase();
    MONTHS.iter().find(|(name, _)| *name == w).map(|(_, m)| *m)
}

/// A day number as written: "3", "03", "3.", "3rd", "1st", "1er" (French), "3-go" (Polish).
fn day(word: &str) -> Option<u32> {
    let w = word.trim_end_matches(['.', ',']).to_lowercase();
    let digits = w.trim_end_matches(|c: char| c.is_alphabetic() || c == '-');
    let suffix = &w[digits.len()..];
    let known = ["", "st", "nd", "rd", "th", "er", "-go", "-ego"];
    known
        .contains(&suffix)
        .then(|| num(digits))
        .flatten()
        .filter(|d| (1..=31).contains(d))
}

/// OCR misreads inside a token that is otherwise a numeric date ("2O24", "l5.03.2024",
/// "15.O3.2024"): letters that look like digits, read as those digits. Other tokens are
/// returned as they are.
fn ocr_digits(token: &str) -> std::borrow::Cow<'_, str> {
    let looks_numeric = token.chars().filter(|c| c.is_ascii_digit()).count() >= 4
        && token
            .chars()
            .all(|c| c.is_ascii_digit() || ".-/".contains(c) || "OoIlSB|".contains(c));
    if !looks_numeric
        || token
            .chars()
            .all(|c| c.is_ascii_digit() || ".-/".contains(c))
    {
        return std::borrow::Cow::Borrowed(token);
    }
    token
        .chars()
        .map(|c| match c {
            'O' | 'o' => '0',
            'I' | 'l' | '|' => '1',
            'S' => '5',
            'B' => '8',
            c => c,
        })
        .collect::<String>()
        .into()
}

/// Closes up separators OCR and layouts space out: "17 . 04 . 2025", "17.04. 2025".
fn close_up(text: &str) -> std::borrow::Cow<'_, str> {
    static SPACED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = SPACED
        .get_or_init(|| regex::Regex::new(r"(\d)[ \t]*([./])[ \t]*(\d)").expect("a valid pattern"));
    // Twice: "17 . 04 . 2025" has two separators sharing the middle digits.
    match re.replace_all(text, "$1$2$3") {
        std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(text),
        std::borrow::Cow::Owned(once) => {
            std::borrow::Cow::Owned(re.replace_all(&once, "$1$2$3").into_owned())
        }
    }
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
    let closed = close_up(text);
    let text = closed.as_ref();
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
    let year_of = |y: &str| year(y.trim_end_matches(['.', ':', ',']));
    for (i, w) in words.iter().enumerate() {
        let fixed = ocr_digits(w.trim_end_matches(['.', ':']));
        let w = fixed.as_ref();
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
        // 17. April 2025 / 17 April 2025 / 1er mars 2024 / 3 maja 2024 r. / 3rd March 2024
        if let (Some(m), Some(y)) = (
            words.get(i + 1).and_then(|m| month(m)),
            words.get(i + 2).and_then(|y| year_of(y)),
        ) {
            if let Some(d) = day(words[i]) {
                push(NaiveDate::from_ymd_opt(y, m, d));
            }
        }
        // April 17, 2025 / March 3rd 2024 (the comma is a separator above)
        if let Some(m) = month(w) {
            if let (Some(d), Some(y)) = (
                words.get(i + 1).and_then(|d| day(d)),
                words.get(i + 2).and_then(|y| year_of(y)),
            ) {
                push(NaiveDate::from_ymd_opt(y, m, d));
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
    "issue date",
    "date issued",
    "statement date",
    "date:",
    "date de facture",
    "date d'émission",
    "date d’émission",
    "émis le",
    "émise le",
    "fait le",
    "data wystawienia",
    "data:",
    "dnia",
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
    // French
    "échéance",
    "echeance",
    "date limite",
    "à payer avant",
    "livraison",
    "commande",
    "période",
    "né le",
    "née le",
    "valable",
    // Polish
    "termin płatności",
    "płatne do",
    "data dostawy",
    "data sprzedaży",
    "okres",
    "urodzen",
    "zamówieni",
    "ważn",
];

/// Where `label` starts a word of `line` ("ende" is in "Ende Mai", not in "versendet").
fn word_at(line: &str, label: &str) -> Vec<usize> {
    line.match_indices(label)
        .filter(|(i, _)| {
            !line[..*i]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
        })
        .map(|(i, _)| i)
        .collect()
}

fn has_word(line: &str, label: &str) -> bool {
    !word_at(line, label).is_empty()
}

/// The part of a line an issue label introduces: from the label to the next label of another
/// date ("Rechnungsdatum 17.04.2025, fällig am 01.05.2025"). A generic label right after
/// another date's word ("due date:") introduces nothing.
fn issue_segment(line: &str) -> Option<&str> {
    let starts: Vec<usize> = ISSUE_LABELS
        .iter()
        .flat_map(|k| word_at(line, k))
        .filter(|&at| {
            let before = &line[line.floor_char_boundary(at.saturating_sub(16))..at];
            !OTHER_LABELS.iter().any(|o| before.contains(o))
        })
        .collect();
    let start = *starts.iter().min()?;
    let end = OTHER_LABELS
        .iter()
        .flat_map(|k| word_at(line, k))
        .filter(|&at| at > start)
        .min()
        .unwrap_or(line.len());
    Some(&line[start..end])
}

/// The dates worth offering as the issue date: those on a line labelled as such if any, else
/// every date except those labelled as something else (order, delivery, due, birth, period,
/// "customer since"), else all of them.
pub fn issue_date_candidates(text: &str) -> Vec<NaiveDate> {
    let all = date_candidates(text);
    let (mut issue, mut other) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let l = line.to_lowercase();
        if let Some(segment) = issue_segment(&l) {
            issue.extend(date_candidates(segment));
        } else if OTHER_LABELS.iter().any(|k| has_word(&l, k)) {
            other.extend(date_candidates(line));
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
    fn french_polish_and_english_forms() {
        assert_eq!(
            date_candidates("Paris, le 1er mars 2024"),
            vec![d(2024, 3, 1)]
        );
        assert_eq!(date_candidates("le 15 août 2023"), vec![d(2023, 8, 15)]);
        assert_eq!(
            date_candidates("Warszawa, dnia 3 maja 2024 r."),
            vec![d(2024, 5, 3)]
        );
        assert_eq!(date_candidates("on March 3rd, 2024"), vec![d(2024, 3, 3)]);
        assert_eq!(date_candidates("the 21st of"), vec![]);
        let fr = "Date de facture : 12/03/2024
Date d'échéance : 11/04/2024";
        assert_eq!(issue_date_candidates(fr), vec![d(2024, 3, 12)]);
        let pl = "Data sprzedaży: 2024-05-01
Data wystawienia: 2024-05-02
Termin płatności:                   2024-05-16";
        assert_eq!(issue_date_candidates(pl), vec![d(2024, 5, 2)]);
        let en = "Order date: 02/03/2024
Invoice date: 05/03/2024
Due date: 19/03/2024";
        assert_eq!(issue_date_candidates(en), vec![d(2024, 3, 5)]);
    }

    #[test]
    fn ocr_noise_in_numeric_dates() {
        assert_eq!(date_candidates("Datum: l5.O3.2O24"), vec![d(2024, 3, 15)]);
        assert_eq!(
            date_candidates("Datum 17 . 04 . 2025"),
            vec![d(2025, 4, 17)]
        );
        assert_eq!(date_candidates("Datum 17.04. 2025"), vec![d(2025, 4, 17)]);
        // Words are not dates, however many O and l they hold.
        assert!(date_candidates("Rechnung Nr. OlOl-2O24").is_empty());
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
