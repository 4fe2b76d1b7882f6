//! The typed facts a document states, for the custom fields its owner asked for: what each
//! field means (its name, by meaning, against a few kinds of fact household paperwork
//! carries), the value the text labels as that fact, and otherwise the values of the field's
//! type the text states, for the model to choose from. Nothing here is keyed on how a field is
//! spelt: the labels below are words of documents ("Rechnungsnummer", "Invoice no."), the
//! owner's field called "Belegnr." reaches the invoice-number fact through the encoder.

use chrono::NaiveDate;
use serde_json::{json, Value};

use super::amounts;
use super::concepts::Concept;
use super::evidence::word_end;
use super::fields::{iban_candidates, CustomField, DataType};

/// What kind of value a fact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Money,
    Reference,
    Date,
    Iban,
}

impl Kind {
    /// Whether a field of `t` can hold this kind of fact.
    fn fits(self, t: &DataType) -> bool {
        matches!(
            (self, t),
            (Kind::Money, DataType::Monetary { .. } | DataType::Float)
                | (Kind::Reference, DataType::String | DataType::Integer)
                | (Kind::Date, DataType::Date)
                | (Kind::Iban, DataType::String)
        )
    }
}

/// A kind of fact, with the labels that introduce it in a document (lower case, matched as
/// words) and what it means in plain English (for the encoder).
pub struct Fact {
    pub kind: Kind,
    pub concept: Concept,
}

/// The facts household paperwork states. The total's labels live in `amounts.rs`.
#[rustfmt::skip]
pub static FACTS: &[Fact] = &[
    Fact { kind: Kind::Money, concept: Concept {
        key: "total",
        meaning: &["total amount of the invoice", "amount to pay", "sum total", "price paid"],
        cues: &[],
    }},
    Fact { kind: Kind::Money, concept: Concept {
        key: "tax",
        meaning: &["value added tax amount", "VAT", "sales tax"],
        cues: &["mwst", "mwst.", "ust", "ust.", "umsatzsteuer", "mehrwertsteuer", "vat", "tva",
            "sales tax", "podatek vat"],
    }},
    Fact { kind: Kind::Reference, concept: Concept {
        key: "invoice_number",
        meaning: &["invoice number", "bill reference number", "receipt number"],
        cues: &["rechnungsnummer", "rechnungs-nr", "rechnungsnr", "rechnung nr", "belegnummer",
            "beleg-nr", "invoice number", "invoice no", "invoice #", "invoice nr",
            "numéro de facture", "n° de facture", "facture n°", "numer faktury", "faktura nr",
            "faktura vat nr", "receipt no", "receipt number", "rechnung * nr", "invoice * no",
            "facture * n°"],
    }},
    Fact { kind: Kind::Reference, concept: Concept {
        key: "customer_number",
        meaning: &["customer number", "client account number", "membership number"],
        cues: &["kundennummer", "kunden-nr", "kundennr", "kunden nr", "mitgliedsnummer",
            "mitglieds-nr", "customer number", "customer no", "customer id", "membership number", "member no", "numéro client", "n° client",
            "numéro de client", "numer klienta", "nr klienta"],
    }},
    Fact { kind: Kind::Reference, concept: Concept {
        key: "contract_number",
        meaning: &["contract number", "insurance policy number"],
        cues: &["vertragsnummer", "vertrags-nr", "vertragsnr", "versicherungsnummer",
            "versicherungsschein-nr", "versicherungsscheinnummer", "policennummer",
            "policy number", "policy no", "contract number", "contract no",
            "numéro de contrat", "n° de contrat", "numer umowy", "numer polisy"],
    }},
    Fact { kind: Kind::Reference, concept: Concept {
        key: "order_number",
        meaning: &["order number", "purchase order reference"],
        cues: &["bestellnummer", "bestell-nr", "auftragsnummer", "auftrags-nr", "order number",
            "order no", "order #", "numéro de commande", "n° de commande", "numer zamówienia"],
    }},
    Fact { kind: Kind::Date, concept: Concept {
        key: "due_date",
        meaning: &["payment due date", "date by which the invoice must be paid"],
        // The date to pay by, and the day a direct debit takes the amount (SEPA's
        // pre-notification wording).
        cues: &["fällig am", "fällig zum", "fällig bis", "fälligkeit", "fälligkeitsdatum",
            "zahlbar bis", "zahlungsziel", "zu zahlen bis", "zahlbar am", "überweisen sie",
            "begleichen sie", "zahlen sie", "buchen wir am", "buchen den betrag",
            "ziehen wir am", "frühestens am", "abbuchung am", "due date", "payment due",
            "due on", "due by", "pay by", "please pay", "will be debited", "échéance",
            "date d'échéance", "à payer avant", "veuillez régler", "sera prélevé",
            "termin płatności", "płatne do", "termin zapłaty"],
    }},
    Fact { kind: Kind::Date, concept: Concept {
        key: "contract_end",
        meaning: &["contract end date", "expiry date of the contract"],
        cues: &["vertragsende", "laufzeit bis", "gültig bis", "endet am", "vertragslaufzeit bis",
            "valid until", "expires", "expiry date", "end date", "date de fin", "fin du contrat",
            "valable jusqu'au", "koniec umowy", "ważna do", "obowiązuje do"],
    }},
    Fact { kind: Kind::Iban, concept: Concept {
        key: "iban",
        meaning: &["IBAN bank account number", "international bank account number",
            "bank details for a transfer"],
        // "Bankverbindung" and its kin head the block that prints the IBAN.
        cues: &["iban", "bankverbindung", "bank details", "coordonnées bancaires",
            "dane do przelewu"],
    }},
];

/// What a field name is compared with when it means nothing in particular ("Feld 1",
/// "Notizen", "Projekt"): a field is read as a fact only when its name is closer to that fact
/// than to all of these by `MIN_MARGIN`. Sentence encoders put short names close to
/// everything, so a plain similarity threshold cannot tell "Betrag" from "Feld 1".
pub const NEUTRAL: &[&str] = &[
    "a note",
    "a name",
    "a colour",
    "a project",
    "a person",
    "a status",
    "a category",
    "a label",
    "a field",
    "a comment",
    "a code",
    "a place",
];
/// How much closer to a fact than to any neutral phrase a field's name must be. Measured
/// with multilingual-e5-small over 46 names (owners' names in four languages and names that
/// mean nothing): real names +0.011 (Montant) to +0.149, meaningless ones -0.117 to +0.006.
pub const MIN_MARGIN: f32 = 0.01;

/// The phrases a fact is recognised by: what it means and the labels documents print for it
/// (the encoder compares an owner's field name with each; the closest counts).
pub fn phrases(fact: &Fact) -> Vec<String> {
    let mut out: Vec<String> = fact.concept.meaning.iter().map(|m| m.to_string()).collect();
    let labels: Vec<&str> = if fact.concept.key == "total" {
        amounts::total_labels()
    } else {
        fact.concept.cues.to_vec()
    };
    out.extend(labels.iter().map(|c| c.replace(" * ", " ")));
    out
}

/// One fact per field and one field per fact: the pairs by score (a name's closeness to the
/// fact), best first, each taken while both are free. `scores[field][fact]`, None where the
/// pair may not be made.
pub fn assign(scores: &[Vec<Option<f32>>]) -> Vec<Option<usize>> {
    let mut pairs: Vec<(f32, usize, usize)> = scores
        .iter()
        .enumerate()
        .flat_map(|(f, row)| {
            row.iter()
                .enumerate()
                .filter_map(move |(j, s)| s.map(|s| (s, f, j)))
        })
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = vec![None; scores.len()];
    let mut taken = vec![false; scores.first().map_or(0, Vec::len)];
    for (_, f, j) in pairs {
        if out[f].is_none() && !taken[j] {
            out[f] = Some(j);
            taken[j] = true;
        }
    }
    out
}

/// Concepts of `FACTS` a field of type `t` may stand for (indices into `FACTS`).
pub fn fitting(t: &DataType) -> Vec<usize> {
    (0..FACTS.len())
        .filter(|&i| FACTS[i].kind.fits(t))
        .collect()
}

/// Values offered to the model for one field at most: a long list costs tokens and the model
/// picks worse among many.
const MAX_CANDIDATES: usize = 12;

/// How a field's value is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The text labels it: the value, and the label.
    Labelled(Value, String),
    /// The model chooses among these (or null). Empty: the text states nothing of the type.
    Choose(Vec<Value>),
    /// The model judges it (a select option, yes or no).
    Judge,
    /// The owner's most similar documents agree on it (a select option or yes/no): the value,
    /// and their share of the neighbours' weight.
    Neighbours(Value, f32),
    /// Never extracted: free text and document links are not facts the text states verbatim.
    NotExtracted,
}

/// Where label `cue` is on `line` (start, end). `a * b` is `a`, then `b` within a few words
/// ("Rechnung des Versicherers (575) Nr.").
fn label_at(line: &str, cue: &str) -> Option<(usize, usize)> {
    match cue.split_once(" * ") {
        None => word_end(line, cue).map(|end| (end - cue.len(), end)),
        Some((a, b)) => {
            // The first part may end a compound ("Handelsrechnung", "Stromrechnung").
            let a_end = line.match_indices(a).find_map(|(at, _)| {
                let end = at + a.len();
                (!line[end..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphanumeric))
                .then_some(end)
            })?;
            let rest = &line[a_end..];
            let b_end = word_end(rest, b)?;
            (b_end - b.len() <= 32).then_some((a_end - a.len(), a_end + b_end))
        }
    }
}

/// The text after the first label of `cues` on each line that has one (the rest of that line),
/// with the label as written.
fn after_labels<'a>(text: &'a str, cues: &[&str]) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let lower = line.to_lowercase();
        // Lower-casing keeps byte offsets only for text whose case folds in place.
        if lower.len() != line.len() {
            continue;
        }
        let hit = cues.iter().filter_map(|c| label_at(&lower, c)).min();
        if let Some((start, end)) = hit {
            out.push((&line[end..], line[start..end].to_owned()));
        }
    }
    out
}

/// Tokens a reference and the filler before it may span.
const REFERENCE_TOKENS: usize = 6;

/// A reference (an invoice, customer or contract number) at the start of `rest`: the first
/// token with a digit, after separators and filler words ("Nr.", ":", "#"); digit groups
/// printed apart ("241 778 503") stay together. Dates and amounts are not references.
fn reference(rest: &str) -> Option<String> {
    let tokens: Vec<&str> = rest.split_whitespace().take(REFERENCE_TOKENS).collect();
    let clean = |t: &str| {
        t.trim_matches(|c: char| matches!(c, ':' | ',' | ';' | '(' | ')' | '"' | '\''))
            .trim_end_matches('.')
            .to_owned()
    };
    let mut i = 0;
    while i < tokens.len() {
        let t = clean(tokens[i]);
        if t.chars().any(|c| c.is_ascii_digit()) {
            break;
        }
        // Filler may precede the number; a word of the text means the label labels nothing.
        if !t.is_empty() && t.chars().count() > 3 && !t.eq_ignore_ascii_case("number") {
            return None;
        }
        i += 1;
    }
    let first = clean(tokens.get(i)?);
    let ok = first.len() >= 3
        && first
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '/' | '.' | '_'))
        && super::dates::date_candidates(&first).is_empty();
    if !ok {
        return None;
    }
    let mut out = first;
    if out.chars().all(|c| c.is_ascii_digit()) {
        for t in &tokens[i + 1..] {
            let t = clean(t);
            if (2..=4).contains(&t.len()) && t.chars().all(|c| c.is_ascii_digit()) {
                out.push(' ');
                out.push_str(&t);
            } else {
                break;
            }
        }
    }
    Some(out)
}

/// A reference as the field stores it: integers as numbers (grouping spaces dropped).
fn reference_value(r: &str, t: &DataType) -> Option<Value> {
    match t {
        DataType::Integer => {
            let digits: String = r.chars().filter(|c| *c != ' ').collect();
            let n: i64 = digits.parse().ok()?;
            i32::try_from(n).ok().map(|n| json!(n))
        }
        _ => Some(json!(r)),
    }
}

/// An amount (`EUR144.34`) as the field stores it: a float field keeps the number.
fn money_value(a: &str, t: &DataType) -> Option<Value> {
    match t {
        DataType::Float => a.get(3..)?.parse::<f64>().ok().map(|f| json!(f)),
        _ => Some(json!(a)),
    }
}

/// The value the text labels as `fact`, for a field of type `t`.
pub fn labelled(fact: &Fact, t: &DataType, text: &str) -> Option<(Value, String)> {
    match fact.kind {
        Kind::Money if fact.concept.key == "total" => {
            let default = match t {
                DataType::Monetary { default_currency } => default_currency.as_deref(),
                _ => None,
            };
            let (a, label) = amounts::labelled_total(text, default)?;
            Some((money_value(&a, t)?, label))
        }
        Kind::Money => {
            after_labels(text, fact.concept.cues)
                .into_iter()
                .find_map(|(rest, label)| {
                    let a = amounts::amount_candidates(rest).into_iter().next()?;
                    Some((money_value(&a, t)?, label))
                })
        }
        Kind::Reference => after_labels(text, fact.concept.cues)
            .into_iter()
            .find_map(|(rest, label)| Some((reference_value(&reference(rest)?, t)?, label))),
        Kind::Date => {
            after_labels(text, fact.concept.cues)
                .into_iter()
                .find_map(|(rest, label)| {
                    let d = super::dates::date_candidates(rest).into_iter().next()?;
                    Some((json!(d.to_string()), label))
                })
        }
        // A checksum-valid IBAN names itself.
        Kind::Iban => iban_candidates(text)
            .into_iter()
            .next()
            .map(|i| (json!(i), "IBAN".to_owned())),
    }
}

/// Tokens that look like references anywhere in the text (a digit, three characters or
/// more, not a date or an amount): what a string or integer field of unknown meaning may
/// take.
fn references_in(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for i in 0..tokens.len() {
            // Only what `reference` reads: joining the rest of a long line for each token would
            // make one-line OCR texts quadratic.
            let end = (i + REFERENCE_TOKENS).min(tokens.len());
            let Some(r) = reference(&tokens[i..end].join(" ")) else {
                continue;
            };
            // Only where the token itself starts the reference, and not inside a longer one.
            if tokens[i].contains(r.split(' ').next().unwrap_or_default())
                && !out.iter().any(|o| o.contains(&r))
            {
                out.push(r);
            }
        }
    }
    out
}

/// URLs the text states.
fn urls_in(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split_whitespace() {
        let w = w.trim_end_matches(['.', ',', ';', ')', '>']);
        if (w.starts_with("https://") || w.starts_with("http://"))
            && w.len() <= 200
            && !w.contains('"')
            && !out.iter().any(|o| o == w)
        {
            out.push(w.to_owned());
        }
    }
    out
}

/// How field `f` is found in `text`: `fact` is the fact its name means (if any). `dates` are
/// the text's dates.
pub fn find(f: &CustomField, fact: Option<&Fact>, text: &str, dates: &[NaiveDate]) -> Found {
    if let Some(fact) = fact {
        // A field that means a known fact takes the value the text labels as it, or none: a
        // value of the right type elsewhere in the text is some other fact.
        return match labelled(fact, &f.data_type, text) {
            Some((v, label)) => Found::Labelled(v, label),
            None => Found::Choose(Vec::new()),
        };
    }
    let mut values: Vec<Value> = match &f.data_type {
        DataType::Monetary { .. } | DataType::Float => amounts::amount_candidates(text)
            .iter()
            .filter_map(|a| money_value(a, &f.data_type))
            .collect(),
        DataType::Date => dates.iter().map(|d| json!(d.to_string())).collect(),
        DataType::String | DataType::Integer => {
            let mut v: Vec<Value> = references_in(text)
                .iter()
                .filter_map(|r| reference_value(r, &f.data_type))
                .collect();
            if matches!(f.data_type, DataType::String) {
                v.splice(0..0, iban_candidates(text).into_iter().map(Value::from));
            }
            v
        }
        DataType::Url => urls_in(text).into_iter().map(Value::from).collect(),
        DataType::Select(_) | DataType::Boolean => return Found::Judge,
        DataType::LongText | DataType::DocumentLink => return Found::NotExtracted,
    };
    let mut seen = Vec::new();
    values.retain(|v| {
        let new = !seen.contains(v);
        seen.push(v.clone());
        new
    });
    values.truncate(MAX_CANDIDATES);
    Found::Choose(values)
}

/// The schema of a value the model chooses: one of `values` or null (a bare null when there
/// are none); a select option or yes/no for the fields it judges.
pub fn choice_schema(f: &CustomField, found: &Found) -> Value {
    match found {
        Found::Choose(values) if values.is_empty() => json!({"type": "null"}),
        Found::Choose(values) => json!({"anyOf": [{"enum": values}, {"type": "null"}]}),
        Found::Judge => f
            .value_schema(&[])
            .unwrap_or_else(|| json!({"type": "null"})),
        Found::Labelled(..) | Found::Neighbours(..) | Found::NotExtracted => {
            json!({"type": "null"})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(data_type: &str) -> CustomField {
        CustomField::from_paperless(&json!({"id": 1, "name": "F", "data_type": data_type})).unwrap()
    }

    fn fact(key: &str) -> &'static Fact {
        FACTS.iter().find(|f| f.concept.key == key).unwrap()
    }

    const LETTER: &str = "Münchner Volkshochschule GmbH\n\
        Kundennummer 2210584\n\
        Rechnungsnummer: R-25-119804\n\
        Datum 08.09.2025\n\
        Kursgebühr 219,00 €\n\
        Rechnungsbetrag 248,99 €\n\
        Zahlbar bis 20.09.2025 auf IBAN DE89 3704 0044 0532 0130 00.\n\
        Danach wird die volle Kursgebühr fällig.";

    #[test]
    fn labelled_facts_of_each_kind() {
        let s = DataType::String;
        assert_eq!(
            labelled(fact("invoice_number"), &s, LETTER).map(|v| v.0),
            Some(json!("R-25-119804"))
        );
        assert_eq!(
            labelled(fact("customer_number"), &DataType::Integer, LETTER).map(|v| v.0),
            Some(json!(2210584))
        );
        assert_eq!(
            labelled(fact("due_date"), &DataType::Date, LETTER).map(|v| v.0),
            Some(json!("2025-09-20"))
        );
        let money = DataType::Monetary {
            default_currency: None,
        };
        assert_eq!(
            labelled(fact("total"), &money, LETTER).map(|v| v.0),
            Some(json!("EUR248.99"))
        );
        assert_eq!(
            labelled(fact("total"), &DataType::Float, LETTER).map(|v| v.0),
            Some(json!(248.99))
        );
        assert_eq!(
            labelled(fact("iban"), &s, LETTER).map(|v| v.0),
            Some(json!("DE89370400440532013000"))
        );
        assert_eq!(labelled(fact("contract_number"), &s, LETTER), None);
    }

    #[test]
    fn each_fact_goes_to_the_field_whose_name_is_closest() {
        // Two fields both close to fact 0; field 1 closer. Field 2 fits nothing.
        let scores = vec![
            vec![Some(0.05), Some(0.04)],
            vec![Some(0.09), None],
            vec![None, None],
        ];
        assert_eq!(assign(&scores), vec![Some(1), Some(0), None]);
        assert!(assign(&[]).is_empty());
    }

    #[test]
    fn a_label_without_a_value_labels_nothing() {
        let s = DataType::String;
        for text in [
            "Bitte geben Sie Ihre Kundennummer bei Zahlung an.",
            "Rechnungsnummer und Datum siehe oben",
            "Kundennummer 12.03.2024",
        ] {
            assert_eq!(labelled(fact("customer_number"), &s, text), None, "{text}");
            assert_eq!(
                labelled(
                    fact("invoice_number"),
                    &s,
                    text.replace("Kunden", "Rechnungs").as_str()
                ),
                None
            );
        }
        assert_eq!(
            labelled(fact("customer_number"), &s, "Mitgliedsnummer 241 778 503").map(|v| v.0),
            Some(json!("241 778 503"))
        );
        assert_eq!(
            labelled(fact("invoice_number"), &s, "Invoice No.: INV-2024/0815").map(|v| v.0),
            Some(json!("INV-2024/0815"))
        );
        assert_eq!(
            labelled(
                fact("invoice_number"),
                &s,
                "Handelsrechnung (380) Nr. R18-31 vom 03.10.2018"
            )
            .map(|v| v.0),
            Some(json!("R18-31"))
        );
        assert_eq!(
            labelled(fact("invoice_number"), &s, "Rechnungsnummer 9023 4417 8812").map(|v| v.0),
            Some(json!("9023 4417 8812"))
        );
        assert_eq!(
            labelled(
                fact("due_date"),
                &DataType::Date,
                "Bitte überweisen Sie den Betrag bis \
                spätestens 01.08.2025 auf das Konto"
            )
            .map(|v| v.0),
            Some(json!("2025-08-01"))
        );
        assert_eq!(
            labelled(
                fact("due_date"),
                &DataType::Date,
                "Danach wird die Gebühr fällig."
            ),
            None
        );
    }

    #[test]
    fn a_field_of_no_known_meaning_chooses_among_the_texts_values() {
        let d = NaiveDate::from_ymd_opt(2025, 9, 8).unwrap();
        let Found::Choose(refs) = find(&field("string"), None, LETTER, &[d]) else {
            panic!()
        };
        assert_eq!(refs[0], json!("DE89370400440532013000"), "IBANs first");
        assert!(refs.contains(&json!("R-25-119804")) && refs.contains(&json!("2210584")));
        assert!(!refs.contains(&json!("08.09.2025")), "{refs:?}");
        assert_eq!(
            find(&field("date"), None, LETTER, &[d]),
            Found::Choose(vec![json!("2025-09-08")])
        );
        assert_eq!(find(&field("boolean"), None, LETTER, &[]), Found::Judge);
        assert_eq!(
            find(&field("longtext"), None, LETTER, &[]),
            Found::NotExtracted
        );
        // A field that means a fact the text does not label gets nothing.
        assert_eq!(
            find(&field("string"), Some(fact("contract_number")), LETTER, &[]),
            Found::Choose(vec![])
        );
    }

    #[test]
    fn every_offered_value_is_valid_for_paperless() {
        let d = NaiveDate::from_ymd_opt(2025, 9, 8).unwrap();
        for t in ["string", "integer", "float", "monetary", "date", "url"] {
            let f = field(t);
            let found = find(&f, None, LETTER, &[d]);
            if let Found::Choose(values) = &found {
                for v in values {
                    assert!(f.to_paperless(v).is_ok(), "{t}: {v}");
                }
            }
            let schema = choice_schema(&f, &found);
            assert!(jsonschema::validator_for(&schema).is_ok(), "{schema}");
        }
    }
}
