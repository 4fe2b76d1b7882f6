//! Which taxonomy names the document's own text supports. A correspondent usually prints its
//! name in the letterhead, the footer or the bank details; when some of the instance's
//! correspondents are named in the text, the model chooses among those (or null) instead of
//! among all of them.

/// Words that say nothing about who a correspondent is.
const GENERIC: &[&str] = &[
    "gmbh",
    "ag",
    "kg",
    "se",
    "co",
    "mbh",
    "ohg",
    "ug",
    "ev",
    "e.v",
    "inc",
    "ltd",
    "llc",
    "plc",
    "und",
    "and",
    "the",
    "der",
    "die",
    "das",
    "dr",
    "med",
    "praxis",
    "partner",
    "söhne",
    "sohn",
    "deutsche",
    "deutschland",
    "germany",
    "gruppe",
    "group",
    "service",
    "services",
    "am",
    "an",
    "für",
    "von",
    "of",
];

/// Where `word` first stands as a whole word in `line` (no letter or digit right before or
/// after it): the byte offset of its end.
pub fn word_end(line: &str, word: &str) -> Option<usize> {
    line.match_indices(word).find_map(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        let bounded =
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
        bounded.then_some(at + word.len())
    })
}

/// Lower-case words of at least two letters, with umlauts kept (names print them).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .collect()
}

/// The distinctive words of a name.
fn key_words(name: &str) -> Vec<String> {
    words(name)
        .into_iter()
        .filter(|w| !GENERIC.contains(&w.as_str()))
        .collect()
}

/// Indices of `names` the text mentions, by position of first mention. A name counts when
/// all of its distinctive words occur in the text, or when one of them that is at least 5
/// letters long and belongs to no other name does: "Telekom Deutschland GmbH" names
/// "Deutsche Telekom", but "Amazon" in the text does not name "Amazon Web Services", nor
/// "München" every correspondent based in Munich.
pub fn mentioned(text: &str, names: &[&str]) -> Vec<usize> {
    let text_words = words(text);
    let all_keys: Vec<Vec<String>> = names.iter().map(|n| key_words(n)).collect();
    let unique = |i: usize, k: &str| {
        all_keys
            .iter()
            .enumerate()
            .all(|(j, keys)| j == i || !keys.iter().any(|x| x == k))
    };
    let first_at = |w: &str| text_words.iter().position(|t| t == w);
    let mut found: Vec<(usize, usize)> = names
        .iter()
        .enumerate()
        .filter_map(|(i, _)| {
            let keys = &all_keys[i];
            if keys.is_empty() {
                return None;
            }
            let positions: Vec<Option<usize>> = keys.iter().map(|k| first_at(k)).collect();
            let all = positions.iter().all(Option::is_some);
            // A name's leading word is its own (the brand: "Hetzner" of "Hetzner Online");
            // a later one is often a common word ("Online", "Energie") that names nothing.
            let strong = keys
                .iter()
                .zip(&positions)
                .take(1)
                .any(|(k, p)| p.is_some() && k.chars().count() >= 5 && unique(i, k));
            (all || strong).then(|| (positions.iter().flatten().min().copied().unwrap_or(0), i))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &[
        "Finanzamt München",
        "Deutsche Telekom",
        "Stadtwerke München",
        "Amazon",
        "Amazon Web Services",
        "Praxis Dr. med. Sabine Hoffmann",
        "ING",
        "Hausverwaltung Berger & Söhne",
    ];

    #[test]
    fn finds_names_in_letterheads_and_footers_in_order() {
        let text = "Telekom Deutschland GmbH, Bonn ... Ihre Rechnung ... Stadtwerke München";
        assert_eq!(mentioned(text, NAMES), vec![1, 2], "not Finanzamt München");
        let text = "amazon.de Rechnung Verkauft von Amazon EU S.à r.l.";
        assert_eq!(
            mentioned(text, NAMES),
            vec![3],
            "Amazon, not Amazon Web Services"
        );
        let text = "Dr. med. Sabine Hoffmann, Fachärztin ... IBAN DE12 ING-DiBa";
        assert_eq!(mentioned(text, NAMES), vec![5, 6]);
        assert_eq!(mentioned("Berger & Söhne Hausverwaltung", NAMES), vec![7]);
        assert_eq!(
            mentioned("Finanzamt München, Steuerbescheid", NAMES),
            vec![0]
        );
    }

    #[test]
    fn a_later_common_word_of_a_name_names_nothing() {
        let names = ["Hetzner Online", "Deutsche Bahn"];
        assert!(mentioned("Ihr Online-Ticket für die Fahrt", &names).is_empty());
        assert_eq!(
            mentioned("Hetzner Online GmbH, Gunzenhausen", &names),
            vec![0]
        );
        assert_eq!(mentioned("Rechnung von hetzner.de", &names), vec![0]);
    }

    #[test]
    fn generic_words_alone_match_nothing() {
        assert!(mentioned("Deutsche Post GmbH, Praxis für Physiotherapie", NAMES).is_empty());
    }
}

/// Whether `text` holds words at all: a blank scan's OCR gives nothing or a few stray marks
/// ("| ~ ,, ii l1"), and metadata made up for it would be someone else's. At least five words
/// (two letters or more, letters only, in any script) that make up at least a third of the
/// non-space characters.
pub fn readable(text: &str) -> bool {
    let mut words = 0usize;
    let mut word_chars = 0usize;
    for token in text.split(|c: char| !c.is_alphanumeric()) {
        let n = token.chars().count();
        if (2..=30).contains(&n) && token.chars().all(char::is_alphabetic) {
            words += 1;
            word_chars += n;
        }
    }
    let visible = text.chars().filter(|c| !c.is_whitespace()).count();
    words >= 5 && 3 * word_chars >= visible
}

#[cfg(test)]
mod readable_tests {
    use super::readable;

    #[test]
    fn blank_scans_and_ocr_noise_are_not_text() {
        assert!(!readable(""));
        assert!(!readable("  \n\x0c "));
        assert!(!readable("| ~ ,, ii l1 . :: —— %% 0O0 ¦ ' '"));
        assert!(!readable(
            "#$%&/()=?{[]}\\ 1 2 3 4 5 6 7 8 9 0 __ ;; :: ~~ ^^ ''' ab"
        ));
        assert!(readable(
            "Rechnung Nr. 4711 vom 14.02.2025, Gesamtbetrag 866,10 EUR"
        ));
        assert!(readable("Facture n° 12 du 3 mars 2024 — montant à payer"));
        assert!(readable(
            "Zaświadczenie o zatrudnieniu wydane dnia 2 maja 2024"
        ));
    }
}
