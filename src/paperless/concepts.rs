//! What a document's words say it is: household-paperwork concepts (kinds of document, topics,
//! paid/unpaid) with the cue words that show them in German and English text, and a plain
//! description of each. Nothing here knows how an instance names its tags or types: which
//! entry stands for which concept is decided by meaning (`meaning.rs`: the entry names and the
//! descriptions, embedded by a multilingual encoder), so the same cues serve "Invoice",
//! "Invoice", "Rechnung" or "Zahlungen".
//!
//! A 135M model cannot tell a payment reminder from an invoice, but the document can: it says
//! "Mahnung" or "Lieferschein" at the top. The cues are ordinary vocabulary of household
//! paperwork, not phrases from any evaluation set; they match as substrings of the lower-cased
//! text so German compounds ("Mobilfunkrechnung", "Einkommensteuerbescheid") count.

pub struct Concept {
    /// Our identifier (never compared with a taxonomy name).
    pub key: &'static str,
    /// What it is, in plain English, German and French: matched against entry names by
    /// meaning (multilingual embeddings; the concept's vector is the mean of its phrases), so
    /// "Rechnungen", "Faktura" or "Zahlungen" find the invoice concept. The small encoder
    /// matches a name best against a description in the name's own language: with English
    /// phrases alone, German and French status names ("payé"/"à payer") swapped paid and
    /// unpaid, and short German topic names took the wrong topic.
    pub meaning: &'static [&'static str],
    /// Lower-case words that show it in a document's text.
    pub cues: &'static [&'static str],
}

/// Document types, most specific first: a reminder or a delivery note also says "Rechnung",
/// a payslip says "Abrechnung"; the first concept with a cue near the top wins.
#[rustfmt::skip]
pub static TYPES: &[Concept] = &[
    Concept {
        key: "payment_reminder",
        meaning: &["reminder about an overdue payment", "payment demand after the due date passed",
            "Erinnerung an eine überfällige Zahlung", "rappel de paiement en retard"],
        cues: &["mahnung", "zahlungserinnerung", "payment reminder", "überfällig", "overdue",
            "letzte erinnerung", "final reminder"],
    },
    Concept {
        key: "delivery_note",
        meaning: &["delivery note accompanying a shipment of goods", "list of items shipped in a parcel",
            "Begleitpapier einer Warensendung", "document accompagnant une livraison de marchandises"],
        cues: &["lieferschein", "delivery note", "packing slip", "keine rechnung",
            "not an invoice"],
    },
    Concept {
        key: "tax_notice",
        meaning: &["tax assessment notice from the tax office", "official income tax assessment",
            "Bescheid des Finanzamts über die festgesetzte Steuer", "avis de l'administration fiscale sur l'impôt"],
        cues: &["steuerbescheid", "bescheid für", "bescheid über", "festsetzung",
            "tax assessment", "notice of assessment"],
    },
    Concept {
        key: "payslip",
        meaning: &["monthly pay statement from the employer", "wage statement with gross and net pay",
            "monatliche Abrechnung von Lohn und Gehalt", "relevé mensuel du salaire versé par l'employeur"],
        cues: &["gehaltsabrechnung", "lohnabrechnung", "entgeltabrechnung", "verdienstabrechnung",
            "bezügeabrechnung", "payslip", "pay slip", "salary statement", "earnings statement"],
    },
    Concept {
        key: "bank_statement",
        meaning: &["bank account statement listing transactions", "account balance and bank transactions",
            "Aufstellung der Buchungen eines Bankkontos", "relevé des opérations d'un compte bancaire"],
        cues: &["kontoauszug", "account statement", "statement of account",
            "kreditkartenabrechnung", "credit card statement", "umsatzübersicht",
            "neuer kontostand", "alter kontostand", "opening balance", "closing balance"],
    },
    Concept {
        key: "insurance_policy",
        meaning: &["insurance policy confirming the coverage", "insurance certificate of the insured person",
            "Urkunde über einen Versicherungsschutz", "certificat d'un contrat d'assurance"],
        cues: &["versicherungsschein", "versicherungspolice", "policy schedule",
            "insurance certificate", "certificate of insurance"],
    },
    Concept {
        key: "medical_bill",
        meaning: &["medical invoice from a doctor or dentist", "doctor's invoice for medical treatment",
            "Rechnung eines Arztes für eine Behandlung", "facture d'un médecin pour des soins"],
        cues: &["goä", "goz", "gebührenordnung", "privatliquidation", "arztrechnung",
            "zahnarztrechnung", "heilmittel", "physiotherap", "diagnose", "behandlungsdatum"],
    },
    Concept {
        key: "warranty_manual",
        meaning: &["product warranty certificate or user manual", "operating instructions of a device",
            "Garantieerklärung oder Anleitung eines Geräts", "garantie ou mode d'emploi d'un appareil"],
        cues: &["garantiekarte", "garantieschein", "garantiebedingungen", "garantiezertifikat",
            "warranty certificate", "warranty terms", "limited warranty", "bedienungsanleitung",
            "gebrauchsanleitung", "user manual", "operating instructions", "betriebsanleitung"],
    },
    Concept {
        key: "receipt",
        meaning: &["receipt proving a purchase was paid at the checkout", "cash register receipt from a shop",
            "Beleg über einen bezahlten Einkauf im Geschäft", "preuve d'achat payé en magasin"],
        cues: &["quittung", "kassenbon", "kassenbeleg", "receipt", "zahlungsbeleg",
            "zahlungsbestätigung", "payment confirmation", "rückgeld", "kartenzahlung",
            "bar gegeben"],
    },
    Concept {
        key: "contract",
        meaning: &["contract, a signed agreement between two parties", "terms and conditions of a contract",
            "unterschriebene Vereinbarung zwischen zwei Parteien", "accord signé entre deux parties"],
        cues: &["vertrag", "contract", "vereinbarung", "agreement", "vertragszusammenfassung"],
    },
    Concept {
        key: "invoice",
        meaning: &["invoice requesting payment for goods or services", "an invoice with the amount due",
            "Forderung eines Betrags für Waren oder Leistungen", "demande de paiement pour des biens ou services"],
        cues: &["rechnung", "invoice", "abrechnung", "rechnungsnummer", "rechnungsdatum",
            "amount due", "zahlbetrag"],
    },
    Concept {
        key: "letter",
        meaning: &["letter, general correspondence", "a letter written to a customer",
            "allgemeines Schreiben an einen Kunden", "correspondance générale adressée à un client"],
        cues: &["sehr geehrte", "dear ", "mit freundlichen grüßen", "freundliche grüße",
            "kind regards", "sincerely"],
    },
];

#[rustfmt::skip]
pub static TOPICS: &[Concept] = &[
    Concept {
        key: "tax",
        meaning: &["taxes and the tax office", "tax matters",
            "Steuern und das Finanzamt", "impôts et administration fiscale"],
        cues: &["finanzamt", "steuerbescheid", "einkommensteuer", "steuererklärung",
            "steuernummer", "tax return", "tax office", "umsatzsteuervoranmeldung",
            "kirchensteuer"],
    },
    Concept {
        key: "insurance",
        meaning: &["insurance", "insurance cover and policies",
            "Versicherungen und Versicherungsschutz", "assurances et contrats d'assurance"],
        cues: &["versicherung", "insurance", "versicherungsschein", "police", "versicherte"],
    },
    Concept {
        key: "utilities",
        meaning: &["electricity, gas, water and heating", "energy and water supply",
            "Kosten für Strom, Gas, Wasser, Heizung und Müll", "frais d'électricité, de gaz, d'eau et de chauffage"],
        cues: &["strom", "erdgas", "gasversorgung", "wasser", "energie", "stadtwerke",
            "heizkosten", "nebenkosten", "betriebskosten", "kwh", "electricity", "fernwärme",
            "abwasser", "müll"],
    },
    Concept {
        key: "telecom",
        meaning: &["phone, mobile and internet", "telecommunications provider",
            "Telefon, Handy und Internetanschluss", "téléphone, mobile et internet"],
        cues: &["telekom", "mobilfunk", "internet", "dsl", "festnetz", "glasfaser", "vodafone",
            "telefon", "mobile", "broadband", "kabel-tv", "fernsehen", "sim-karte", "rufnummer"],
    },
    Concept {
        key: "bank",
        meaning: &["banking and bank accounts", "finances at the bank",
            "Bankgeschäfte und Konten", "opérations bancaires et comptes"],
        cues: &["kontoauszug", "girokonto", "kreditkarte", "darlehen", "kredit", "sparkasse",
            "volksbank", "bank statement", "account statement", "depot", "tagesgeld", "dispo"],
    },
    Concept {
        key: "medical",
        meaning: &["health and medical care", "doctors and health insurance",
            "Gesundheit, Ärzte und Krankenkasse", "santé, médecins et soins"],
        cues: &["arzt", "ärzt", "praxis", "patient", "zahn", "krankenkasse",
            "krankenversicherung", "physiotherap", "diagnose", "behandlung", "apotheke", "klinik",
            "krankenhaus", "medical", "doctor", "dental", "heilmittel"],
    },
    Concept {
        key: "car",
        meaning: &["car and motor vehicle", "automobile and its repairs",
            "Auto und Kraftfahrzeug", "automobile et véhicule"],
        cues: &["kfz", "fahrzeug", "pkw", "kennzeichen", "werkstatt", "tüv", "kraftfahr",
            "vehicle", "reifen", "auto"],
    },
    Concept {
        key: "home",
        meaning: &["housing, rent and apartment", "the house where we live",
            "Wohnen, Miete und Wohnung", "logement, loyer et appartement"],
        cues: &["miete", "wohnung", "vermieter", "mieter", "möbel", "hausrat", "wohngebäude",
            "immobilie", "rent", "apartment", "furniture", "household", "betriebskosten",
            "nebenkosten", "eigentümer", "hausverwaltung"],
    },
    Concept {
        key: "travel",
        meaning: &["travel, trips and tickets", "vacation and journeys",
            "Reisen, Urlaub und Fahrkarten", "voyages, vacances et billets"],
        cues: &["reise", "flug", "hotel", "flight", "booking", "travel", "boarding",
            "übernachtung", "fahrkarte", "bahncard"],
    },
    Concept {
        key: "work",
        meaning: &["job and employment", "the employer and working",
            "Arbeit und Arbeitgeber", "emploi et employeur"],
        cues: &["arbeitgeber", "arbeitsvertrag", "gehalt", "entgelt", "personalnummer",
            "employer", "employment", "salary", "payslip", "arbeitszeugnis", "arbeitnehmer",
            "lohn"],
    },
    Concept {
        key: "warranty",
        meaning: &["product warranty", "warranty period of a product",
            "Garantie eines Produkts", "garantie d'un produit"],
        cues: &["garantie", "gewährleistung", "warranty", "guarantee"],
    },
    Concept {
        key: "subscription",
        meaning: &["recurring subscription services", "monthly subscription",
            "wiederkehrende Abonnements und Mitgliedschaften", "abonnements et adhésions récurrents"],
        cues: &["abonnement", "abo ", "mitgliedschaft", "subscription", "membership", "streaming",
            "hosting", "cloud", "monatsbeitrag", "deutschlandticket", "laufzeit"],
    },
    Concept {
        key: "legal",
        meaning: &["legal matters, courts and attorneys", "law and legal proceedings",
            "Rechtsangelegenheiten, Gerichte und Anwälte", "affaires juridiques, tribunaux et avocats"],
        cues: &["rechtsanwalt", "anwalt", "notar", "gericht", "bußgeld", "kanzlei", "lawyer",
            "attorney", "court", "verwarnungsgeld", "mandant"],
    },
    Concept {
        key: "education",
        meaning: &["education and training", "school and studies",
            "Ausbildung, Schule und Studium", "formation, école et études"],
        cues: &["schule", "universität", "hochschule", "kurs", "studium", "semester",
            "weiterbildung", "course", "tuition", "school", "university", "volkshochschule"],
    },
    Concept {
        key: "pets",
        meaning: &["pets and veterinary care", "dogs and cats",
            "Haustiere und Tierarzt", "animaux de compagnie et vétérinaire"],
        cues: &["tierarzt", "hund", "katze", "tierhalter", "veterinary", "vet ", "pet ", "dog",
            "cat "],
    },
    Concept {
        key: "shopping",
        meaning: &["shopping for goods", "things bought in a store or online shop",
            "Einkäufe im Laden oder online", "achats en magasin ou en ligne"],
        cues: &["bestellung", "artikel", "bestellnummer", "order number", "purchase", "warenkorb",
            "versandkosten", "lieferung", "kaufvertrag"],
    },
    Concept {
        key: "government",
        meaning: &["government offices and public agencies", "public agencies of the state",
            "Behörden und öffentliche Verwaltung", "administration publique et services de l'État"],
        cues: &["rundfunkbeitrag", "bürgeramt", "meldebehörde", "behörde", "landratsamt",
            "ausländerbehörde", "government", "stadtverwaltung", "beitragsservice", "standesamt",
            "kfz-zulassung"],
    },
    Concept {
        key: "paid",
        meaning: &["payment completed", "the amount has been paid",
            "die Zahlung ist erledigt", "le montant a été réglé"],
        cues: &["bezahlt", "paid", "beglichen", "has been charged", "dankend erhalten",
            "betrag erhalten", "zahlung erhalten"],
    },
    Concept {
        key: "unpaid",
        meaning: &["payment outstanding", "the amount still has to be paid",
            "der Betrag muss noch bezahlt werden", "le montant reste à régler"],
        cues: &["mahnung", "zahlungserinnerung", "überfällig", "overdue", "noch offen",
            "ausstehend", "payment reminder"],
    },
];

/// Words that turn a cue around when they stand right before it ("nicht bezahlt", "unpaid").
const NEGATIONS: &[&str] = &["nicht ", "not ", "un", "noch nicht ", "keine "];

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

/// The kind of document the text shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeCue {
    /// Index into [`TYPES`].
    pub concept: usize,
    pub cue: &'static str,
    /// Shown at the top (a heading), not only somewhere in the text.
    pub in_head: bool,
}

/// Letters a word may go on after a type cue and still be that thing: inflections
/// ("Mahnungen", "Physiotherapie"), not a compound's next noun ("Vertragskonto" is an
/// account, "Rechnungsadresse" an address: in German the last part of a compound says what
/// it is).
const MAX_TYPE_CUE_TAIL: usize = 4;

/// Occurrences of a type cue that name the document's kind: not negated, and not the first
/// part of a longer compound.
fn count_as_kind(text: &str, cue: &str) -> usize {
    text.match_indices(cue)
        .filter(|(i, _)| {
            let before = &text[..*i];
            let after = &text[i + cue.len()..];
            let tail = after.chars().take_while(|c| c.is_alphabetic()).count();
            !NEGATIONS.iter().any(|n| before.ends_with(n))
                && (cue.ends_with(' ') || tail <= MAX_TYPE_CUE_TAIL)
        })
        .count()
}

/// The kind of document the text shows: the most specific concept with a cue at the top, else
/// anywhere (concept order is priority order: a reminder also says "Rechnung").
pub fn type_cue(text: &str) -> Option<TypeCue> {
    let lower = text.to_lowercase();
    for (part, in_head) in [(head(&lower), true), (lower.as_str(), false)] {
        for (concept, c) in TYPES.iter().enumerate() {
            if let Some(cue) = c.cues.iter().find(|cue| count_as_kind(part, cue) > 0) {
                return Some(TypeCue {
                    concept,
                    cue,
                    in_head,
                });
            }
        }
    }
    None
}

/// Topics the text shows: (index into [`TOPICS`], cue occurrences), strongest first.
pub fn topic_cues(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_lowercase();
    let mut out: Vec<(usize, usize)> = TOPICS
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.cues.iter().map(|cue| count(&lower, cue)).sum()))
        .filter(|(_, n)| *n > 0)
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// The topics a text is about: those with at least half the cues of the strongest (a tag
/// needs more than a passing mention).
pub fn shown_topics(text: &str) -> Vec<usize> {
    let topics = topic_cues(text);
    let strongest = topics.first().map_or(0, |(_, n)| *n);
    topics
        .iter()
        .filter(|(_, n)| 2 * n >= strongest)
        .map(|(c, _)| *c)
        .collect()
}

/// The cue of topic `concept` that occurs most often in `text` (for the explanation).
pub fn topic_word(text: &str, concept: usize) -> Option<&'static str> {
    let lower = text.to_lowercase();
    TOPICS
        .get(concept)?
        .cues
        .iter()
        .map(|cue| (count(&lower, cue), *cue))
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n)
        .map(|(_, cue)| cue)
}

/// The document's own word for its kind ("Mobilfunkrechnung", "Kontoauszug", "Invoice"): the
/// first word near the top holding a cue of type concept `concept`.
pub fn type_word(text: &str, concept: usize) -> Option<String> {
    let concept = TYPES.get(concept)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: Option<TypeCue>) -> Option<&'static str> {
        c.map(|c| TYPES[c.concept].key)
    }

    #[test]
    fn the_most_specific_type_shown_at_the_top_wins() {
        assert_eq!(
            key(type_cue("Stromrechnung\nRechnungsnummer 1")),
            Some("invoice")
        );
        assert_eq!(
            key(type_cue("2. Mahnung\nunsere Rechnung vom 3.4. ist offen")),
            Some("payment_reminder")
        );
        assert_eq!(
            key(type_cue("Lieferschein\nDies ist keine Rechnung")),
            Some("delivery_note")
        );
        assert_eq!(
            key(type_cue("Sehr geehrte Frau Vogt,\nwir ziehen um.")),
            Some("letter")
        );
        assert_eq!(type_cue("Flyer: Pizza zum halben Preis"), None);
        // A compound's first part is not what the document is.
        assert_eq!(
            key(type_cue("Vertragskonto 2004\nJahresabrechnung Strom")),
            Some("invoice")
        );
        assert_eq!(key(type_cue("Ihr Mobilfunkvertrag")), Some("contract"));
    }

    #[test]
    fn the_documents_own_type_word() {
        let text = "Telekom Deutschland GmbH\nIhre Mobilfunkrechnung für März 2025";
        let invoice = TYPES.iter().position(|c| c.key == "invoice").unwrap();
        let payslip = TYPES.iter().position(|c| c.key == "payslip").unwrap();
        assert_eq!(
            type_word(text, invoice).as_deref(),
            Some("Mobilfunkrechnung")
        );
        assert_eq!(type_word(text, payslip), None);
    }

    #[test]
    fn topics_by_evidence_and_negation() {
        let keys = |text: &str| -> Vec<&str> {
            topic_cues(text)
                .iter()
                .map(|(i, _)| TOPICS[*i].key)
                .collect()
        };
        let k = keys("Stadtwerke: Ihre Stromrechnung. Strom 412 kWh. Der Betrag wurde bezahlt.");
        assert_eq!(k[0], "utilities");
        assert!(k.contains(&"paid"));
        assert!(!keys("Die Rechnung ist noch nicht bezahlt.").contains(&"paid"));
    }

    #[test]
    fn every_concept_says_what_it_means() {
        for c in TYPES.iter().chain(TOPICS) {
            assert!(!c.meaning.is_empty() && !c.cues.is_empty(), "{}", c.key);
        }
    }
}
