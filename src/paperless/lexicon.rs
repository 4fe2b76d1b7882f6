//! What the words of a document say about its type and tags, in German and English.
//!
//! A 135M model cannot tell a payment reminder from an invoice, but the document can: it says
//! "Mahnung" or "Lieferschein" at the top. Each concept (a document type or a topic tag) has
//! names a taxonomy may call it by and cue words that show it in a text. Only taxonomy entries
//! whose name is a known concept are decided here; anything else is left to the model.
//!
//! The cues are ordinary vocabulary of household paperwork, not phrases from any evaluation
//! set; they match as substrings of the lower-cased text so German compounds
//! ("Mobilfunkrechnung", "Einkommensteuerbescheid") count.

use super::classifier::Named;

struct Concept {
    /// Lower-case names a taxonomy may use for it.
    names: &'static [&'static str],
    cues: &'static [&'static str],
}

/// Document types, most specific first: a reminder or a delivery note also says "Rechnung",
/// a payslip says "Abrechnung"; the first concept with a cue near the top wins.
#[rustfmt::skip]
static TYPES: &[Concept] = &[
    Concept {
        names: &["payment reminder", "reminder", "mahnung", "zahlungserinnerung"],
        cues: &["mahnung", "zahlungserinnerung", "payment reminder", "überfällig", "overdue",
            "letzte erinnerung", "final reminder"],
    },
    Concept {
        names: &["delivery note", "lieferschein"],
        cues: &["lieferschein", "delivery note", "packing slip", "keine rechnung",
            "not an invoice"],
    },
    Concept {
        names: &["tax notice", "steuerbescheid", "bescheid"],
        cues: &["steuerbescheid", "bescheid für", "bescheid über", "festsetzung",
            "tax assessment", "notice of assessment"],
    },
    Concept {
        names: &["payslip", "pay slip", "gehaltsabrechnung", "lohnabrechnung",
            "entgeltabrechnung"],
        cues: &["gehaltsabrechnung", "lohnabrechnung", "entgeltabrechnung", "verdienstabrechnung",
            "bezügeabrechnung", "payslip", "pay slip", "salary statement", "earnings statement"],
    },
    Concept {
        names: &["bank statement", "kontoauszug"],
        cues: &["kontoauszug", "account statement", "statement of account",
            "kreditkartenabrechnung", "credit card statement", "umsatzübersicht",
            "neuer kontostand", "alter kontostand", "opening balance", "closing balance"],
    },
    Concept {
        names: &["insurance policy", "versicherungsschein", "police", "versicherungspolice"],
        cues: &["versicherungsschein", "versicherungspolice", "policy schedule",
            "insurance certificate", "certificate of insurance"],
    },
    Concept {
        names: &["medical bill", "arztrechnung"],
        cues: &["goä", "goz", "gebührenordnung", "privatliquidation", "arztrechnung",
            "zahnarztrechnung", "heilmittel", "physiotherap", "diagnose", "behandlungsdatum"],
    },
    Concept {
        names: &["warranty/manual", "warranty", "manual", "garantie", "bedienungsanleitung",
            "anleitung"],
        cues: &["garantiekarte", "garantieschein", "garantiebedingungen", "garantiezertifikat",
            "warranty certificate", "warranty terms", "limited warranty", "bedienungsanleitung",
            "gebrauchsanleitung", "user manual", "operating instructions", "betriebsanleitung"],
    },
    Concept {
        names: &["receipt", "quittung", "beleg", "kassenbon", "kassenbeleg"],
        cues: &["quittung", "kassenbon", "kassenbeleg", "receipt", "zahlungsbeleg",
            "zahlungsbestätigung", "payment confirmation", "rückgeld", "kartenzahlung",
            "bar gegeben"],
    },
    Concept {
        names: &["contract", "vertrag"],
        cues: &["vertrag", "contract", "vereinbarung", "agreement", "vertragszusammenfassung"],
    },
    Concept {
        names: &["invoice", "rechnung", "bill"],
        cues: &["rechnung", "invoice", "abrechnung", "rechnungsnummer", "rechnungsdatum",
            "amount due", "zahlbetrag"],
    },
    Concept {
        names: &["letter", "brief", "schreiben", "correspondence", "korrespondenz"],
        cues: &["sehr geehrte", "dear ", "mit freundlichen grüßen", "freundliche grüße",
            "kind regards", "sincerely"],
    },
];

#[rustfmt::skip]
static TAGS: &[Concept] = &[
    Concept {
        names: &["tax", "taxes", "steuer", "steuern"],
        cues: &["finanzamt", "steuerbescheid", "einkommensteuer", "steuererklärung",
            "steuernummer", "tax return", "tax office", "umsatzsteuervoranmeldung",
            "kirchensteuer"],
    },
    Concept {
        names: &["insurance", "versicherung", "versicherungen"],
        cues: &["versicherung", "insurance", "versicherungsschein", "police", "versicherte"],
    },
    Concept {
        names: &["utilities", "utility", "energie", "nebenkosten", "versorger"],
        cues: &["strom", "erdgas", "gasversorgung", "wasser", "energie", "stadtwerke",
            "heizkosten", "nebenkosten", "betriebskosten", "kwh", "electricity", "fernwärme",
            "abwasser", "müll"],
    },
    Concept {
        names: &["telecom", "telekommunikation", "telefon", "internet", "mobilfunk"],
        cues: &["telekom", "mobilfunk", "internet", "dsl", "festnetz", "glasfaser", "vodafone",
            "telefon", "mobile", "broadband", "kabel-tv", "fernsehen", "sim-karte", "rufnummer"],
    },
    Concept {
        names: &["bank", "banking", "finanzen", "finance"],
        cues: &["kontoauszug", "girokonto", "kreditkarte", "darlehen", "kredit", "sparkasse",
            "volksbank", "bank statement", "account statement", "depot", "tagesgeld", "dispo"],
    },
    Concept {
        names: &["medical", "health", "gesundheit", "arzt", "medizin"],
        cues: &["arzt", "ärzt", "praxis", "patient", "zahn", "krankenkasse",
            "krankenversicherung", "physiotherap", "diagnose", "behandlung", "apotheke", "klinik",
            "krankenhaus", "medical", "doctor", "dental", "heilmittel"],
    },
    Concept {
        names: &["car", "auto", "kfz", "fahrzeug", "vehicle"],
        cues: &["kfz", "fahrzeug", "pkw", "kennzeichen", "werkstatt", "tüv", "kraftfahr",
            "vehicle", "reifen", "auto"],
    },
    Concept {
        names: &["home", "house", "haus", "wohnung", "wohnen", "household"],
        cues: &["miete", "wohnung", "vermieter", "mieter", "möbel", "hausrat", "wohngebäude",
            "immobilie", "rent", "apartment", "furniture", "household", "betriebskosten",
            "nebenkosten", "eigentümer", "hausverwaltung"],
    },
    Concept {
        names: &["travel", "reise", "reisen", "urlaub"],
        cues: &["reise", "flug", "hotel", "flight", "booking", "travel", "boarding",
            "übernachtung", "fahrkarte", "bahncard"],
    },
    Concept {
        names: &["work", "job", "arbeit", "beruf", "employment"],
        cues: &["arbeitgeber", "arbeitsvertrag", "gehalt", "entgelt", "personalnummer",
            "employer", "employment", "salary", "payslip", "arbeitszeugnis", "arbeitnehmer",
            "lohn"],
    },
    Concept {
        names: &["warranty", "garantie", "gewährleistung"],
        cues: &["garantie", "gewährleistung", "warranty", "guarantee"],
    },
    Concept {
        names: &["subscription", "subscriptions", "abo", "abonnement", "mitgliedschaft"],
        cues: &["abonnement", "abo ", "mitgliedschaft", "subscription", "membership", "streaming",
            "hosting", "cloud", "monatsbeitrag", "deutschlandticket", "laufzeit"],
    },
    Concept {
        names: &["legal", "recht", "rechtliches", "anwalt"],
        cues: &["rechtsanwalt", "anwalt", "notar", "gericht", "bußgeld", "kanzlei", "lawyer",
            "attorney", "court", "verwarnungsgeld", "mandant"],
    },
    Concept {
        names: &["education", "bildung", "schule", "studium"],
        cues: &["schule", "universität", "hochschule", "kurs", "studium", "semester",
            "weiterbildung", "course", "tuition", "school", "university", "volkshochschule"],
    },
    Concept {
        names: &["pets", "pet", "haustier", "haustiere", "tiere"],
        cues: &["tierarzt", "hund", "katze", "tierhalter", "veterinary", "vet ", "pet ", "dog",
            "cat "],
    },
    Concept {
        names: &["shopping", "einkauf", "einkäufe", "purchases"],
        cues: &["bestellung", "artikel", "bestellnummer", "order number", "purchase", "warenkorb",
            "versandkosten", "lieferung", "kaufvertrag"],
    },
    Concept {
        names: &["government", "behörde", "behörden", "amt", "staat"],
        cues: &["rundfunkbeitrag", "bürgeramt", "meldebehörde", "behörde", "landratsamt",
            "ausländerbehörde", "government", "stadtverwaltung", "beitragsservice", "standesamt",
            "kfz-zulassung"],
    },
    Concept {
        names: &["paid", "bezahlt", "erledigt"],
        cues: &["bezahlt", "paid", "beglichen", "has been charged", "dankend erhalten",
            "betrag erhalten", "zahlung erhalten"],
    },
    Concept {
        names: &["unpaid", "offen", "unbezahlt", "open"],
        cues: &["mahnung", "zahlungserinnerung", "überfällig", "overdue", "noch offen",
            "ausstehend", "payment reminder"],
    },
];

/// Words that turn a cue around when they stand right before it ("nicht bezahlt", "unpaid").
const NEGATIONS: &[&str] = &["nicht ", "not ", "un", "noch nicht ", "keine "];

/// Index of the concept a taxonomy name stands for.
fn concept_of(concepts: &[Concept], name: &str) -> Option<usize> {
    let name = name.trim().to_lowercase();
    concepts
        .iter()
        .position(|c| c.names.contains(&name.as_str()))
}

/// Occurrences of `cue` in `text` (lower-case) that are not negated.
fn count(text: &str, cue: &str) -> usize {
    text.match_indices(cue)
        .filter(|(i, _)| {
            let before = &text[..*i];
            !NEGATIONS.iter().any(|n| before.ends_with(n))
        })
        .count()
}

/// The top of a document (letterhead, heading): where it says what it is.
fn head(text: &str) -> &str {
    let limit = (text.len() / 4).max(400).min(text.len());
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The document type the text shows, as an index into `types`; None when no type the
/// lexicon knows is shown (the model decides then).
pub fn document_type(text: &str, types: &[Named]) -> Option<usize> {
    let lower = text.to_lowercase();
    let known: Vec<Option<usize>> = types.iter().map(|t| concept_of(TYPES, &t.name)).collect();
    // Concept order is priority order: scan concepts, not the taxonomy.
    for part in [head(&lower), lower.as_str()] {
        for (c, concept) in TYPES.iter().enumerate() {
            let Some(i) = known.iter().position(|k| *k == Some(c)) else {
                continue;
            };
            if concept.cues.iter().any(|cue| count(part, cue) > 0) {
                return Some(i);
            }
        }
    }
    None
}

/// The document's own word for its type ("Mobilfunkrechnung", "Kontoauszug", "Invoice"):
/// the first word near the top holding a cue of the type named `type_name`.
pub fn type_word(text: &str, type_name: &str) -> Option<String> {
    let concept = &TYPES[concept_of(TYPES, type_name)?];
    let words = |part: &str| -> Option<String> {
        part.split(|c: char| !(c.is_alphanumeric() || c == '-'))
            .filter(|w| w.chars().count() >= 3)
            .find(|w| {
                let l = w.to_lowercase();
                concept
                    .cues
                    .iter()
                    .any(|c| !c.contains(' ') && l.contains(c))
            })
            .map(|w| w.trim_matches('-').to_owned())
    };
    words(head(text)).or_else(|| words(text))
}

/// Tags the text shows (indices into `tags`, strongest first, at most `max`): the strongest,
/// and others with at least half its evidence. Also returns the tags the lexicon does not
/// know, which only the model can judge.
pub fn tags(text: &str, tags: &[Named], max: usize) -> (Vec<usize>, Vec<usize>) {
    let lower = text.to_lowercase();
    let mut scored = Vec::new();
    let mut unknown = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        match concept_of(TAGS, &t.name) {
            Some(c) => {
                let n: usize = TAGS[c].cues.iter().map(|cue| count(&lower, cue)).sum();
                if n > 0 {
                    scored.push((i, n));
                }
            }
            None => unknown.push(i),
        }
    }
    scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let best = scored.first().map(|s| s.1).unwrap_or(0);
    let chosen = scored
        .into_iter()
        .filter(|(_, n)| 2 * n >= best)
        .take(max)
        .map(|(i, _)| i)
        .collect();
    (chosen, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> Vec<Named> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Named {
                id: i as i64 + 1,
                name: n.to_string(),
            })
            .collect()
    }

    #[test]
    fn the_most_specific_type_shown_at_the_top_wins() {
        let types = named(&["Invoice", "Payment Reminder", "Letter", "Delivery Note"]);
        let t = |text: &str| document_type(text, &types).map(|i| types[i].name.as_str());
        assert_eq!(t("Stromrechnung\nRechnungsnummer 1"), Some("Invoice"));
        assert_eq!(
            t("2. Mahnung\nunsere Rechnung vom 3.4. ist offen"),
            Some("Payment Reminder")
        );
        assert_eq!(
            t("Lieferschein\nDies ist keine Rechnung"),
            Some("Delivery Note")
        );
        assert_eq!(t("Sehr geehrte Frau Vogt,\nwir ziehen um."), Some("Letter"));
        assert_eq!(t("Flyer: Pizza zum halben Preis"), None);
    }

    #[test]
    fn types_the_lexicon_does_not_know_are_left_to_the_model() {
        let types = named(&["Kram", "Sonstiges"]);
        assert_eq!(document_type("Rechnung Nr. 5", &types), None);
        // A German taxonomy name maps to the same concept.
        let german = named(&["Brief", "Rechnung"]);
        assert_eq!(document_type("Rechnung Nr. 5", &german), Some(1));
    }

    #[test]
    fn the_documents_own_type_word() {
        let text = "Telekom Deutschland GmbH\nIhre Mobilfunkrechnung für März 2025";
        assert_eq!(
            type_word(text, "Invoice").as_deref(),
            Some("Mobilfunkrechnung")
        );
        assert_eq!(type_word(text, "Payslip"), None);
        assert_eq!(type_word(text, "Kram"), None);
    }

    #[test]
    fn tags_by_evidence_and_negation() {
        let t = named(&["utilities", "paid", "unpaid", "home", "Kinder"]);
        let (chosen, unknown) = tags(
            "Stadtwerke: Ihre Stromrechnung. Strom 412 kWh. Der Betrag wurde bezahlt.",
            &t,
            3,
        );
        assert_eq!(chosen[0], 0, "utilities first");
        assert!(!chosen.contains(&2));
        assert_eq!(unknown, vec![4], "Kinder is for the model");
        let (chosen, _) = tags("Die Rechnung ist noch nicht bezahlt.", &t, 3);
        assert!(!chosen.contains(&1), "'nicht bezahlt' is not paid");
    }
}
