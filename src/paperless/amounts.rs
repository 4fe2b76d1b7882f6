//! Money amounts a document states, in Paperless's monetary format (`EUR144.34`): the
//! candidates a monetary custom field may take (issue 23 — the model chooses among what the
//! text says, it does not invent). German (`1.234,56`), English (`1,234.56`) and French
//! (`1 234,56`) digit grouping; the currency as a code or a sign, before or after the number.
//! Amounts on a line that names a total come first.

/// Words that label the amount to pay, in the languages of household paperwork, strongest
/// first (a line with "Gesamtbetrag" beats one with "Summe"); matched case-insensitively as
/// words. They describe the document, never the owner's field names.
const TOTAL_LABELS: &[&[&str]] = &[
    &[
        "gesamtbetrag",
        "rechnungsbetrag",
        "endbetrag",
        "zahlbetrag",
        "zu zahlen",
        "amount due",
        "balance due",
        "total due",
        "grand total",
        "amount payable",
        "net à payer",
        "montant total",
        "total ttc",
        "montant ttc",
        "do zapłaty",
        "kwota do zapłaty",
    ],
    &[
        "gesamtsumme",
        "gesamtpreis",
        "endsumme",
        "total",
        "montant",
        "razem",
        "suma",
        "łącznie",
    ],
    &["summe", "gesamt", "ttc", "betrag"],
];

fn total_rank(lower_line: &str) -> Option<(usize, &'static str)> {
    TOTAL_LABELS.iter().enumerate().find_map(|(rank, labels)| {
        labels
            .iter()
            .find(|l| has_word(lower_line, l))
            .map(|l| (rank, *l))
    })
}

/// The amount the text labels as its total, with the label: on the lines with the strongest
/// total label, the largest of each line's last amount (the rightmost column of a totals line
/// is the gross; "total excl. VAT" comes before "total incl. VAT").
pub fn labelled_total(text: &str) -> Option<(String, String)> {
    let mut best: Option<(usize, i64, String, String)> = None;
    for line in text.lines() {
        let lower = line.to_lowercase();
        let Some((rank, label)) = total_rank(&lower) else {
            continue;
        };
        let Some(a) = line_amounts(line).pop() else {
            continue;
        };
        let c = amount_cents(&a);
        let better = match &best {
            None => true,
            Some((r, cents, _, _)) => rank < *r || (rank == *r && c > *cents),
        };
        if better {
            best = Some((rank, c, a, label.to_owned()));
        }
    }
    best.map(|(_, _, a, label)| (a, label))
}

/// `EUR144.34` → 14434.
fn amount_cents(a: &str) -> i64 {
    let n: String = a
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    n.parse().unwrap_or(0)
}

const CURRENCY_SIGNS: &[(&str, &str)] = &[("€", "EUR"), ("$", "USD"), ("£", "GBP"), ("zł", "PLN")];
const CURRENCY_CODES: &[&str] = &[
    "EUR", "USD", "GBP", "CHF", "PLN", "CZK", "SEK", "NOK", "DKK",
];

/// Every amount the text states with a currency, totals first, each once.
pub fn amount_candidates(text: &str) -> Vec<String> {
    let mut labelled = Vec::new();
    let mut other = Vec::new();
    for line in text.lines() {
        let lower = line.to_lowercase();
        let is_total = total_rank(&lower).is_some();
        for a in line_amounts(line) {
            let list = if is_total { &mut labelled } else { &mut other };
            list.push(a);
        }
    }
    let mut out: Vec<String> = Vec::new();
    for a in labelled.into_iter().chain(other) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn has_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The currency a token names, if any.
fn currency(token: &str) -> Option<&'static str> {
    let t = token.trim_matches(|c: char| c == ':' || c == ',' || c == ';');
    CURRENCY_SIGNS
        .iter()
        .find(|(s, _)| *s == t)
        .map(|(_, c)| *c)
        .or_else(|| {
            CURRENCY_CODES
                .iter()
                .find(|c| c.eq_ignore_ascii_case(t))
                .copied()
        })
}

/// A printed number as cents: `1.234,56`, `1,234.56`, `1 234,56`, `144,34`, `12.50`, `12`.
fn cents(number: &str) -> Option<i64> {
    let n: String = number
        .chars()
        .filter(|c| *c != ' ' && *c != '\u{a0}')
        .collect();
    let n = n.trim_end_matches(['-', '–']).trim_end_matches(['.', ',']);
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
    {
        return None;
    }
    // The last separator followed by exactly two digits is the decimal point.
    let (whole, frac) = match n.rfind(['.', ',']) {
        Some(i) if n.len() - i - 1 == 2 => (&n[..i], &n[i + 1..]),
        _ => (n, "00"),
    };
    let digits: String = whole.chars().filter(char::is_ascii_digit).collect();
    // Grouping separators come every three digits; anything else is not one number.
    let groups: Vec<&str> = whole.split(['.', ',']).collect();
    if groups.len() > 1 && groups[1..].iter().any(|g| g.len() != 3) {
        return None;
    }
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    Some(digits.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}

/// Amounts on one line: a number with a currency right before or after it.
fn line_amounts(line: &str) -> Vec<String> {
    // Split signs glued to numbers (`€12,50`, `12,50€`) into tokens of their own.
    let mut spaced = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if matches!(c, '€' | '$' | '£') {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        // A number may be printed in groups separated by spaces (`1 234,56`).
        let mut j = i;
        let mut number = String::new();
        while j < tokens.len() && cents(tokens[j]).is_some() {
            let next = tokens[j];
            let grouped = number.is_empty()
                || (next.len() >= 3 && next.as_bytes()[..3].iter().all(u8::is_ascii_digit));
            if !grouped {
                break;
            }
            if !number.is_empty() {
                number.push(' ');
            }
            number.push_str(next);
            j += 1;
        }
        if number.is_empty() {
            i += 1;
            continue;
        }
        let before = i.checked_sub(1).and_then(|k| currency(tokens[k]));
        let after = tokens.get(j).and_then(|t| currency(t));
        if let Some(code) = before.or(after) {
            // `Pos. 1 100,00 EUR` reads as 1,100.00 in French grouping and as 100.00 after a
            // position number: both are offered, the model reads the line.
            let readings = [Some(number.as_str()), (j > i + 1).then(|| tokens[j - 1])];
            for c in readings.into_iter().flatten().filter_map(cents) {
                out.push(format!("{code}{}.{:02}", c / 100, c % 100));
            }
        }
        i = j.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_first_in_paperless_format() {
        let text = "Stromlieferung 412 kWh, Arbeitspreis 98,10 EUR\n\
                    Grundpreis: EUR 30,00\n\
                    Gesamtbetrag 144,34 EUR inkl. 19% MwSt.\n\
                    Abschlag ab April: 1.234,56 €";
        assert_eq!(
            amount_candidates(text),
            vec!["EUR144.34", "EUR98.10", "EUR30.00", "EUR1234.56"]
        );
    }

    #[test]
    fn the_labelled_total_is_the_gross_on_the_strongest_line() {
        let t = |s: &str| labelled_total(s).map(|(a, _)| a);
        assert_eq!(
            t("Zwischensumme 159,66 €\nSumme 159,66 € 30,33 € 189,99 €\nVersand 0,00 €"),
            Some("EUR189.99".into())
        );
        assert_eq!(
            t("Total excl. VAT: £100.00\nVAT £20.00\nTotal incl. VAT: £120.00"),
            Some("GBP120.00".into())
        );
        assert_eq!(
            t("Summe 50,00 EUR\nGesamtbetrag 45,00 EUR (nach Rabatt)"),
            Some("EUR45.00".into())
        );
        assert_eq!(t("Subtotal 12.00 USD"), None, "a subtotal is no total");
        assert_eq!(t("Gesamtbrutto 5.348,00"), None, "no currency, no amount");
    }

    #[test]
    fn english_french_polish_forms() {
        assert_eq!(
            amount_candidates("Amount due: $1,234.50"),
            vec!["USD1234.50"]
        );
        assert_eq!(
            amount_candidates("Net à payer : 1 234,56 €"),
            vec!["EUR1234.56", "EUR234.56"]
        );
        assert_eq!(
            amount_candidates("Do zapłaty: 250,00 zł"),
            vec!["PLN250.00"]
        );
        assert_eq!(amount_candidates("Total CHF 12.50"), vec!["CHF12.50"]);
        assert_eq!(amount_candidates("Preis: €12"), vec!["EUR12.00"]);
        assert_eq!(
            amount_candidates("Pos. 1 100,00 EUR"),
            vec!["EUR1100.00", "EUR100.00"]
        );
    }

    #[test]
    fn numbers_without_a_currency_are_not_amounts() {
        assert!(
            amount_candidates("Kundennummer 123.456, 19% MwSt, 412 kWh, 12.03.2024").is_empty()
        );
        assert!(amount_candidates("Rechnung Nr. 2024-0815").is_empty());
    }
}
