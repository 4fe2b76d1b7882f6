//! The classifier on the real model: one constrained call per document; the answer uses only
//! the taxonomy's names, a date written in the document (or null), at most three tags.

mod common;

use std::process::Command;

use common::Server;
use serde_json::{json, Value};

const INVOICE: &str = "Stadtwerke München GmbH\nEmmy-Noether-Straße 2, 80992 München\n\n\
    Stromrechnung\nKundennummer 4711 0815, Kunde seit 01.03.2015\nRechnungsdatum: 12.03.2024\n\n\
    Abrechnungszeitraum 01.01.2024 - 29.02.2024\nVerbrauch 412 kWh\nGesamtbetrag 144,34 EUR\n\
    Der Betrag wird am 26.03.2024 von Ihrem Konto abgebucht.";

fn taxonomy() -> Value {
    json!({
        "tags": [{"id": 1, "name": "utilities"}, {"id": 2, "name": "paid"}, {"id": 3, "name": "car"},
                 {"id": 4, "name": "insurance"}],
        "correspondents": [{"id": 1, "name": "Stadtwerke München"}, {"id": 2, "name": "Allianz"},
                           {"id": 3, "name": "Deutsche Telekom"}],
        "document_types": [{"id": 1, "name": "Invoice"}, {"id": 2, "name": "Contract"},
                           {"id": 3, "name": "Letter"}],
    })
}

fn check(s: &Value) {
    let t = taxonomy();
    let names = |k: &str| -> Vec<Value> {
        t[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].clone())
            .collect()
    };
    assert!(
        s["correspondent"].is_null() || names("correspondents").contains(&s["correspondent"]),
        "{s}"
    );
    assert!(
        s["document_type"].is_null() || names("document_types").contains(&s["document_type"]),
        "{s}"
    );
    let tags = s["tags"].as_array().unwrap();
    assert!(
        tags.len() <= 3 && tags.iter().all(|x| names("tags").contains(x)),
        "{s}"
    );
    let mut unique = tags.clone();
    unique.dedup();
    assert_eq!(unique.len(), tags.len(), "no duplicate tags: {s}");
    let dates = [
        "2015-03-01",
        "2024-03-12",
        "2024-01-01",
        "2024-02-29",
        "2024-03-26",
    ];
    assert!(
        s["created"].is_null() || dates.contains(&s["created"].as_str().unwrap()),
        "{s}"
    );
    let title = s["title"].as_str().unwrap();
    assert!((3..=80).contains(&title.chars().count()), "{s}");
}

#[test]
fn classify_over_http_and_on_the_command_line() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/classify", s.url))
        .json(&json!({"content": INVOICE, "taxonomy": taxonomy()}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().unwrap();
    check(&v["suggestion"]);
    assert!(v["latency"].as_u64().is_some());
    assert_eq!(
        v["suggestion"]["correspondent"], "Stadtwerke München",
        "{v}"
    );
    // Letterhead, "Stromrechnung" and the invoice date decide every field: the model's call
    // would only repeat them, so it is not made.
    assert_eq!(v["suggestion"]["document_type"], "Invoice", "{v}");
    assert_eq!(v["prompt_tokens"], 0, "{v}");
    assert!(!v["explanation"].to_string().contains("\"model\""), "{v}");

    // A letter the evidence cannot type goes to the model, constrained to the taxonomy.
    let letter = "Liebe Nachbarn,\nam Samstag feiern wir unser Hoffest im Garten hinter dem \
        Haus. Bringt gern Salate und Kuchen mit, Getränke sind da. Wir freuen uns auf euch!";
    let (st, m) = s.post(
        "/api/classify",
        json!({"content": letter, "taxonomy": taxonomy()}),
    );
    assert_eq!(st, 200, "{m}");
    check(&m["suggestion"]);
    assert!(m["prompt_tokens"].as_u64().unwrap() > 0, "{m}");
    assert!(
        ["model", "nothing"].contains(&m["explanation"]["document_type"]["by"].as_str().unwrap()),
        "{m}"
    );

    let bad = |body: Value| {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/api/classify", s.url))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!(bad(json!({"taxonomy": taxonomy()})).0, 400);
    assert_eq!(bad(json!({"content": "x"})).0, 400);
    assert_eq!(bad(json!({"content": "  ", "taxonomy": taxonomy()})).0, 400);
    assert_eq!(
        bad(json!({"content": "x", "taxonomy": taxonomy(), "model": "nosuch"})).0,
        404
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("doc.txt"), INVOICE).unwrap();
    std::fs::write(dir.path().join("tax.json"), taxonomy().to_string()).unwrap();
    let model = common::test_model_path();
    let out = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(["classify", "--device", "cpu", "--threads", "2", "--file"])
        .arg(dir.path().join("doc.txt"))
        .arg("--taxonomy")
        .arg(dir.path().join("tax.json"))
        .env(
            "CANDLELIGHT_MODELS_DIR",
            model.parent().unwrap().parent().unwrap(),
        )
        .env_remove("OLLAMA_MODEL")
        .output()
        .unwrap();
    let v = common::json_stdout(&out);
    check(&v["suggestion"]);
}

#[test]
fn the_token_guards_everything_that_writes_to_paperless() {
    let _one = common::serial();
    let http = reqwest::blocking::Client::new();
    let send = |s: &Server, path: &str, body: Value, token: Option<&str>| {
        let mut r = http.post(format!("{}{path}", s.url)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    // No Paperless configured: a request past the token check gets 503, one stopped by it 401.
    let s = Server::start_with_env(&[], &[("CANDLELIGHT_WEBHOOK_TOKEN", "s3cret")]);
    for path in ["/api/paperless/webhook", "/api/classify"] {
        let body = json!({"document_id": 7});
        let (status, err) = send(&s, path, body.clone(), None);
        assert_eq!(status, 401, "{path}: {err}");
        assert!(err["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"));
        assert_eq!(send(&s, path, body.clone(), Some("wrong")).0, 401, "{path}");
        assert_eq!(send(&s, path, body, Some("s3cret")).0, 503, "{path}");
    }
    // Classifying text touches no Paperless document: no token needed.
    let (status, _) = send(
        &s,
        "/api/classify",
        json!({"content": "x", "taxonomy": {"tags": [], "correspondents": [], "document_types": []}}),
        None,
    );
    assert_ne!(status, 401);
    drop(s);
    // A blank token (an empty Secret key) means no token, not "reject everything".
    let s = Server::start_with_env(&[], &[("CANDLELIGHT_WEBHOOK_TOKEN", "")]);
    let (status, _) = send(
        &s,
        "/api/paperless/webhook",
        json!({"document_id": 7}),
        None,
    );
    assert_eq!(status, 503);
}

/// Documents of several kinds, and a household's taxonomy under two namings that mean the
/// same (English, and a German household's own words), by entry id.
const DOCS: &[&str] = &[
    INVOICE,
    "Sparkasse Musterstadt\nKontoauszug Nr. 4/2024 vom 30.04.2024\nGirokonto DE12 3456\n\
     Alter Kontostand 1.204,10 EUR\nLastschrift Stadtwerke -84,00\nGehalt +2.310,00\n\
     Neuer Kontostand 3.430,10 EUR",
    "Allianz Versicherungs-AG\nVersicherungsschein Nr. KH-221-7\nKfz-Haftpflichtversicherung \
     für Ihr Fahrzeug M-AB 123\nVersicherungsbeginn 01.01.2024, Beitrag jährlich 412,00 EUR",
    "Telekom Deutschland GmbH\n2. Mahnung\nUnsere Rechnung vom 03.02.2024 über Ihren \
     Mobilfunkvertrag ist überfällig. Bitte zahlen Sie den offenen Betrag von 39,95 EUR \
     bis zum 15.04.2024.",
];

fn household(names: [&str; 8]) -> Value {
    json!({
        "document_types": [{"id": 1, "name": names[0]}, {"id": 2, "name": names[1]},
                           {"id": 3, "name": names[2]}, {"id": 4, "name": names[3]}],
        "tags": [{"id": 11, "name": names[4]}, {"id": 12, "name": names[5]},
                 {"id": 13, "name": names[6]}, {"id": 14, "name": names[7]}],
        "correspondents": [{"id": 1, "name": "Stadtwerke München"}, {"id": 2, "name": "Allianz"},
                           {"id": 3, "name": "Deutsche Telekom"}],
    })
}

fn id_of(t: &Value, kind: &str, name: &Value) -> Option<i64> {
    t[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| &e["name"] == name)
        .and_then(|e| e["id"].as_i64())
}

#[test]
fn names_that_mean_the_same_give_the_same_answer() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let english = household([
        "Invoice",
        "Bank Statement",
        "Insurance Policy",
        "Payment Reminder",
        "Electricity & Gas",
        "Vehicles",
        "Insurances",
        "Banking",
    ]);
    let own = household([
        "Rechnungen",
        "Kontoauszüge",
        "Policen",
        "Mahnungen",
        "Strom und Gas",
        "Fahrzeuge",
        "Versicherungen",
        "Bankgeschäfte",
    ]);
    let (mut decided, mut tagged) = (0, 0);
    for doc in DOCS {
        let answer = |t: &Value| {
            let (st, r) = s.post("/api/classify", json!({"content": doc, "taxonomy": t}));
            assert_eq!(st, 200, "{r}");
            let s = &r["suggestion"];
            let tags: Vec<Option<i64>> = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| id_of(t, "tags", x))
                .collect();
            (id_of(t, "document_types", &s["document_type"]), tags, r)
        };
        let (type_en, tags_en, r_en) = answer(&english);
        let (type_own, tags_own, r_own) = answer(&own);
        assert_eq!(type_en, type_own, "{r_en}\n{r_own}");
        assert_eq!(tags_en, tags_own, "{r_en}\n{r_own}");
        decided += usize::from(r_en["explanation"]["document_type"]["by"] == "text");
        tagged += tags_en.iter().filter(|t| t.is_some()).count();
    }
    assert!(
        decided >= 3,
        "the text decided the type of {decided} documents only"
    );
    assert!(tagged >= 3, "only {tagged} tags in all");
}

/// Paid and unpaid are near each other for the encoder ("Paid" and "Unpaid" differ by a
/// prefix); with English descriptions alone, English and French status names swapped.
#[test]
fn payment_status_names_keep_their_sense_in_any_language() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let paid = "Stadtwerke München\nRechnung Nr. 2024-311 vom 02.05.2024\nStrom April 2024, \
                84,00 EUR.\nDer Betrag wurde per Lastschrift beglichen. Vielen Dank.";
    let overdue = DOCS[3];
    for names in [
        [
            "Invoice",
            "Bank Statement",
            "Insurance Policy",
            "Payment Reminder",
            "Electricity & Gas",
            "Vehicles",
            "Paid",
            "Unpaid",
        ],
        [
            "Rechnung",
            "Kontoauszug",
            "Police",
            "Mahnung",
            "Strom und Gas",
            "Fahrzeuge",
            "Bezahlt",
            "Unbezahlt",
        ],
        [
            "Facture",
            "Relevé",
            "Police d'assurance",
            "Relance",
            "Énergie",
            "Véhicules",
            "Réglé",
            "Impayé",
        ],
    ] {
        let t = household(names);
        let tags = |doc: &str| {
            let (st, r) = s.post("/api/classify", json!({"content": doc, "taxonomy": t}));
            assert_eq!(st, 200, "{r}");
            let tags: Vec<String> = r["suggestion"]["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect();
            (tags, r)
        };
        let (on_paid, r) = tags(paid);
        assert!(on_paid.iter().any(|t| t == names[6]), "{names:?}: {r}");
        assert!(!on_paid.iter().any(|t| t == names[7]), "{names:?}: {r}");
        let (on_overdue, r) = tags(overdue);
        assert!(on_overdue.iter().any(|t| t == names[7]), "{names:?}: {r}");
        assert!(!on_overdue.iter().any(|t| t == names[6]), "{names:?}: {r}");
    }
}

#[test]
fn a_similar_labelled_document_decides_what_the_text_alone_cannot() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let taxonomy = json!({
        "document_types": [{"id": 1, "name": "Invoice"}, {"id": 2, "name": "Vereinsleben"}],
        "tags": [{"id": 1, "name": "Verein"}, {"id": 2, "name": "utilities"}],
        "correspondents": [],
    });
    let minutes = |n: u32| {
        format!(
            "Protokoll der Mitgliederversammlung {n} des Kleingartenvereins Sonnenblick e.V.\n\
             Tagesordnung: Bericht des Vorstands, Kassenbericht, Wahl der Kassenprüfer, \
             Gemeinschaftsarbeit im Frühjahr. Die Versammlung stimmt mit {n} Stimmen zu."
        )
    };
    let examples: Vec<Value> = (1..=3)
        .map(|i| {
            json!({"id": format!("ex{i}"), "content": minutes(10 + i),
                   "document_type": "Vereinsleben", "tags": ["Verein"]})
        })
        .collect();
    let (st, cold) = s.post(
        "/api/classify",
        json!({"content": minutes(20), "taxonomy": taxonomy}),
    );
    assert_eq!(st, 200, "{cold}");
    assert_ne!(cold["explanation"]["document_type"]["by"], "neighbours");
    let (st, warm) = s.post(
        "/api/classify",
        json!({"content": minutes(20), "taxonomy": taxonomy, "examples": examples}),
    );
    assert_eq!(st, 200, "{warm}");
    assert_eq!(
        warm["suggestion"]["document_type"], "Vereinsleben",
        "{warm}"
    );
    assert_eq!(
        warm["explanation"]["document_type"]["by"], "neighbours",
        "{warm}"
    );
    assert_eq!(warm["suggestion"]["tags"], json!(["Verein"]), "{warm}");
    assert_eq!(
        warm["explanation"]["neighbours"].as_array().unwrap().len(),
        3,
        "{warm}"
    );
}

/// The custom fields a household defines, with the names it gives them, and its storage paths.
fn with_fields() -> Value {
    let mut t = taxonomy();
    t["custom_fields"] = json!([
        {"id": 1, "name": "Betrag", "data_type": "monetary", "extra_data": {"default_currency": null}},
        {"id": 2, "name": "Kundennr.", "data_type": "string", "extra_data": null},
        {"id": 3, "name": "Zahlweise", "data_type": "select", "extra_data": {"select_options": [
            {"id": "a1", "label": "Lastschrift"}, {"id": "b2", "label": "Überweisung"}]}},
        {"id": 4, "name": "Kennzahl", "data_type": "integer", "extra_data": null},
        {"id": 5, "name": "Notiz", "data_type": "longtext", "extra_data": null},
        {"id": 6, "name": "Verknüpft", "data_type": "documentlink", "extra_data": null},
    ]);
    t["storage_paths"] = json!([
        {"id": 1, "name": "Haus", "path": "haus/{{ created_year }}/{{ title }}",
         "matching_algorithm": 0, "match": ""},
        {"id": 2, "name": "Auto", "path": "auto/{{ title }}", "matching_algorithm": 0, "match": ""},
    ]);
    t
}

#[test]
fn custom_fields_take_what_the_text_states_in_paperless_formats() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let names = [
        "Betrag",
        "Kundennr.",
        "Zahlweise",
        "Kennzahl",
        "Notiz",
        "Verknüpft",
    ];
    let (st, v) = s.post(
        "/api/classify",
        json!({"content": INVOICE, "taxonomy": with_fields(), "custom_fields": names}),
    );
    assert_eq!(st, 200, "{v}");
    check(&v["suggestion"]);
    let f = &v["suggestion"]["custom_fields"];
    let why = &v["explanation"]["custom_fields"];
    // Facts the text labels, found by what the field's name means.
    assert_eq!(f["Betrag"], "EUR144.34", "{v}");
    assert_eq!(why["Betrag"]["by"], "text", "{v}");
    assert_eq!(f["Kundennr."], "4711 0815", "{v}");
    // Judged by the model among the options, or a value of the type the text states.
    assert!(
        f["Zahlweise"].is_null()
            || ["Lastschrift", "Überweisung"].contains(&f["Zahlweise"].as_str().unwrap()),
        "{v}"
    );
    let k = &f["Kennzahl"];
    assert!(
        k.is_null()
            || INVOICE
                .replace(' ', "")
                .contains(&k.as_i64().unwrap().to_string()),
        "an integer stated in the text: {v}"
    );
    // Free text and links are never made up.
    assert!(f["Notiz"].is_null() && f["Verknüpft"].is_null(), "{v}");
    assert_eq!(why["Notiz"]["by"], "nothing", "{v}");
    assert_eq!(
        f.as_object().unwrap().len(),
        names.len(),
        "every field asked: {v}"
    );
    let path = &v["suggestion"]["storage_path"];
    assert!(
        path.is_null() || ["Haus", "Auto"].contains(&path.as_str().unwrap()),
        "{v}"
    );
    assert!(
        v["prompt_tokens"].as_u64().unwrap() > 0,
        "the select goes to the model: {v}"
    );

    // Without custom_fields nothing is extracted; a name the taxonomy lacks is the caller's error.
    let (st, plain) = s.post(
        "/api/classify",
        json!({"content": INVOICE, "taxonomy": with_fields()}),
    );
    assert_eq!(st, 200, "{plain}");
    assert!(
        plain["suggestion"].get("custom_fields").is_none(),
        "{plain}"
    );
    let (st, e) = s.post(
        "/api/classify",
        json!({"content": INVOICE, "taxonomy": with_fields(), "custom_fields": ["Farbe"]}),
    );
    assert_eq!(st, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("Farbe"), "{e}");
    let mut broken = with_fields();
    broken["custom_fields"][0]["data_type"] = json!("colour");
    let (st, e) = s.post(
        "/api/classify",
        json!({"content": INVOICE, "taxonomy": broken, "custom_fields": ["Betrag"]}),
    );
    assert_eq!(st, 400, "{e}");

    // The command line names the fields the same way, and says what to do when one is unknown.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("doc.txt"), INVOICE).unwrap();
    std::fs::write(dir.path().join("tax.json"), with_fields().to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args([
            "classify",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--fields",
            "Betrag,Farbe",
            "--file",
        ])
        .arg(dir.path().join("doc.txt"))
        .arg("--taxonomy")
        .arg(dir.path().join("tax.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Farbe") && err.contains("custom_fields"),
        "{err}"
    );
}

#[test]
fn a_select_field_follows_the_owners_most_similar_documents() {
    let _one = common::serial();
    let s = Server::start(&[]);
    // The owner's earlier bills from the same utility were paid by direct debit; an unrelated
    // letter was paid by transfer.
    let earlier = |month: &str, amount: &str| {
        json!({"content": INVOICE.replace("12.03.2024", month).replace("144,34", amount),
               "document_type": "Invoice", "tags": ["utilities"],
               "custom_fields": {"Zahlweise": "Lastschrift"}})
    };
    let examples = json!([
        earlier("12.01.2024", "151,20"),
        earlier("12.02.2024", "139,02"),
        {"content": "Rechtsanwalt Dr. Huber, Kanzlei am Markt\nKostennote für die Beratung im \
                     Mietrechtsstreit, bitte überweisen Sie 420,00 EUR.",
         "document_type": "Letter", "tags": [], "custom_fields": {"Zahlweise": "Überweisung"}},
    ]);
    let (st, v) = s.post(
        "/api/classify",
        json!({"content": INVOICE, "taxonomy": with_fields(), "examples": examples,
               "custom_fields": ["Zahlweise", "Betrag"]}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["suggestion"]["custom_fields"]["Zahlweise"], "Lastschrift",
        "{v}"
    );
    assert_eq!(
        v["explanation"]["custom_fields"]["Zahlweise"]["by"], "neighbours",
        "{v}"
    );
    // An amount is the document's own: never taken from the neighbours.
    assert_eq!(
        v["suggestion"]["custom_fields"]["Betrag"], "EUR144.34",
        "{v}"
    );
}

/// Whether `v` (a field value in Paperless's format) is written in `text`: amounts by their
/// digits, dates in any of the usual layouts, the rest as it is.
fn stated(v: &Value, text: &str) -> bool {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    match v {
        Value::String(s)
            if s.len() > 3
                && s[..3].chars().all(|c| c.is_ascii_uppercase())
                && s[3..].parse::<f64>().is_ok() =>
        {
            let cents: String = s[3..].chars().filter(char::is_ascii_digit).collect();
            digits.contains(cents.trim_start_matches('0'))
        }
        Value::String(s) => match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Ok(d) => [
                "%d.%m.%Y",
                "%d/%m/%Y",
                "%Y-%m-%d",
                "%-d %B %Y",
                "%B %-d, %Y",
            ]
            .iter()
            .any(|f| text.contains(&d.format(f).to_string())),
            Err(_) => text.contains(s.as_str()),
        },
        Value::Number(n) => digits.contains(&n.to_string().replace(['.', '-'], "")),
        _ => false,
    }
}

#[test]
fn a_field_of_no_known_meaning_takes_only_values_the_text_states() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let mut t = taxonomy();
    // Names that mean nothing: every value is the model's choice among the text's values.
    t["custom_fields"] = json!([
        {"id": 1, "name": "Feld A", "data_type": "monetary"},
        {"id": 2, "name": "Feld B", "data_type": "date"},
        {"id": 3, "name": "Feld C", "data_type": "string"},
        {"id": 4, "name": "Feld D", "data_type": "integer"},
        {"id": 5, "name": "Feld E", "data_type": "url"},
    ]);
    let letter = "Allianz Versicherungs-AG\nVersicherungsschein A5-7731, Ihr Zeichen KV 22/41\n\
        München, 20.11.2025\nIhr neuer Jahresbeitrag ab 01.03.2026: 211,63 EUR (bisher 197,78 EUR).\n\
        Mehr unter https://www.allianz.de/beitrag. Anzahl Verträge: 3";
    let mut model_values = 0;
    for text in [INVOICE, letter] {
        let (st, v) = s.post(
            "/api/classify",
            json!({"content": text, "taxonomy": t,
                   "custom_fields": ["Feld A", "Feld B", "Feld C", "Feld D", "Feld E"]}),
        );
        assert_eq!(st, 200, "{v}");
        for (name, value) in v["suggestion"]["custom_fields"].as_object().unwrap() {
            let why = &v["explanation"]["custom_fields"][name];
            assert_ne!(why["by"], "text", "no meaning, no label read: {v}");
            if !value.is_null() {
                model_values += 1;
                assert!(
                    stated(value, text),
                    "{name} = {value} is not in the text: {v}"
                );
            }
        }
    }
    assert!(model_values > 0, "the model chose some value");
}
