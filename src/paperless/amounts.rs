//! Money amounts a document states, in Paperless's monetary format (`EUR144.34`): the
//! candidates a monetary custom field may take (issue 23 — the model chooses among what the
//! text says, it does not invent). German (`1.234,56`), English (`1,234.56`) and French
//! (`1 234,56`) digit grouping; the currency as a code or a sign, before or after the number.
//! Amounts on a line that names a total come first.

/// Words that label the amount to pay, in the languages of household paperwork, in ranks: the
/// amount left to pay (after advance payments) first, then a document's total, then generic
/// sums; matched case-insensitively as words. They describe the document, never the owner's
/// field names.
const TOTAL_LABELS: &[&[&str]] = &[
    &[
        "zahlbetrag",
        "zu zahlen",
        "zu zahlender betrag",
        "nachzahlung",
        "nachzahlungsbetrag",
        "offener betrag",
        "offener rechnungsbetrag",
        "auszahlungsbetrag",
        "amount due",
        "balance due",
        "total due",
        "amount payable",
        "net à payer",
        "reste à payer",
        "montant dû",
        "do zapłaty",
        "kwota do zapłaty",
    ],
    &[
        "gesamtbetrag",
        "rechnungsbetrag",
        "endbetrag",
        "gesamtsumme",
        "bruttosumme",
        "grand total",
        "total amount",
        "invoice amount",
        "montant total",
        "total ttc",
        "montant ttc",
    ],
    // Generic words count only where they open the line ("Summe 79,94", not "Arbeitspreis
    // brutto 11,42 ct").
    &[
        "gesamtpreis",
        "endsumme",
        "summe",
        "brutto",
        "total",
        "montant",
        "razem",
        "suma",
        "łącznie",
    ],
    &["gesamt", "ttc", "betrag"],
];

/// The labels of an amount to pay or a document's total (the first two ranks).
pub fn total_labels() -> Vec<&'static str> {
    TOTAL_LABELS[..LINE_START_RANK].concat()
}

/// The rank at which generic labels must open the line.
const LINE_START_RANK: usize = 2;

fn total_rank(lower_line: &str) -> Option<(usize, &'static str)> {
    TOTAL_LABELS.iter().enumerate().find_map(|(rank, labels)| {
        labels
            .iter()
            .find(|l| {
                if rank == LINE_START_RANK {
                    let t = lower_line.trim_start();
                    t.starts_with(*l)
                        && !t[l.len()..]
                            .chars()
                            .next()
                            .is_some_and(char::is_alphanumeric)
                } else {
                    has_word(lower_line, l)
                }
            })
            .map(|l| (rank, *l))
    })
}

/// The currency a document is written in: one it declares ("Währung: EUR", "Currency: USD"),
/// else the one it names most often; None when it names none.
pub fn document_currency(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    for label in ["währung", "currency", "devise", "waluta"] {
        for (at, _) in lower.match_indices(label) {
            let rest = &text[(at + label.len()).min(text.len())..];
            if let Some(c) = rest
                .split_whitespace()
                .next()
                .and_then(|t| currency(t.trim_start_matches(':')))
            {
                return Some(c);
            }
        }
    }
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for line in text.lines() {
        for t in spaced(line).split_whitespace() {
            if let Some(c) = currency(t) {
                match counts.iter_mut().find(|(k, _)| *k == c) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((c, 1)),
                }
            }
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(c, _)| c)
}

/// The amount the text labels as its total, with the label: on the lines with the strongest
/// total label, the largest of each line's last amount (the rightmost column of a totals line
/// is the gross; "total excl. VAT" comes before "total incl. VAT"). A total printed without a
/// currency ("Zahlbetrag 440,00" under "Währung: EUR") takes the document's currency, else
/// `default_currency`; only with cents, so that counts and years are not read as money.
pub fn labelled_total(text: &str, default_currency: Option<&str>) -> Option<(String, String)> {
    let fallback = document_currency(text).or(default_currency);
    let mut best: Option<(usize, i64, String, String)> = None;
    for line in text.lines() {
        let lower = line.to_lowercase();
        let Some((rank, label)) = total_rank(&lower) else {
            continue;
        };
        let amount = line_amounts(line).pop().or_else(|| {
            let code = fallback?;
            let c = line
                .split_whitespace()
                .rev()
                .find(|t| t.chars().any(|c| c.is_ascii_digit()))
                .map(|t| t.trim_end_matches(['.', ',', ';', ')']))
                .filter(|t| has_cents(t))
                .and_then(cents)?;
            Some(format!("{code}{}.{:02}", c / 100, c % 100))
        });
        let Some(a) = amount else {
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

/// `440,00`, `1.234,56`: a number printed with two decimals.
fn has_cents(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() > 3
        && matches!(b[b.len() - 3], b',' | b'.')
        && b[b.len() - 2..].iter().all(u8::is_ascii_digit)
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
/// Currency names printed as words ("55,08 Euro").
const CURRENCY_WORDS: &[(&str, &str)] = &[("euro", "EUR"), ("euros", "EUR"), ("franken", "CHF")];

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
    super::evidence::word_end(line, word).is_some()
}

/// The currency a token names, if any.
fn currency(token: &str) -> Option<&'static str> {
    let t = token.trim_matches(|c: char| c == ':' || c == ',' || c == ';' || c == '.');
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
        .or_else(|| {
            CURRENCY_WORDS
                .iter()
                .find(|(w, _)| w.eq_ignore_ascii_case(t))
                .map(|(_, c)| *c)
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

/// `line` with currency signs glued to numbers (`€12,50`, `12,50€`) split into tokens of
/// their own.
fn spaced(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if matches!(c, '€' | '$' | '£') {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Amounts on one line: a number with a currency right before or after it.
fn line_amounts(line: &str) -> Vec<String> {
    let spaced = spaced(line);
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
        let t = |s: &str| labelled_total(s, None).map(|(a, _)| a);
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
        assert_eq!(
            t("Währung: EUR\nBruttosumme 18.310,63\nAnzahlungen -17808,00\nZahlbetrag 502,63"),
            Some("EUR502.63".into()),
            "the amount left to pay, in the declared currency"
        );
        assert_eq!(
            t("Summe Betriebskosten 2.341,92 €\nNachzahlung 181,92 €"),
            Some("EUR181.92".into())
        );
        assert_eq!(t("Offener Betrag 55,08 Euro"), Some("EUR55.08".into()));
        assert_eq!(
            t("Grundpreis brutto 14,99 €/Monat"),
            None,
            "a generic word inside a line labels no total"
        );
        assert_eq!(
            t("Gesamtbetrag der Einkünfte 96.102\nin EUR"),
            None,
            "no cents"
        );
        assert_eq!(
            labelled_total("Summe 498,99", Some("CHF")).map(|(a, _)| a),
            Some("CHF498.99".into()),
            "the field's default currency when the text names none"
        );
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
