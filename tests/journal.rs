//! Review and undo against the real Paperless-ngx (../shared/paperless-ngx, started by the
//! test): every write is in the journal under the data folder before it is made, and undo
//! takes back what we changed and only that — a field the user edited since and a tag the
//! user added since stay — across a restart, over HTTP and from the command line.

mod common;
mod real_paperless;

use common::Server;
use real_paperless::RealPaperless;
use serde_json::{json, Value};

/// `candlelight undo ARGS` against `pl`, with the data folder `data`.
fn cli_undo(pl: &RealPaperless, data: &std::path::Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .arg("undo")
        .args(args)
        .env("PAPERLESS_URL", &pl.url)
        .env("PAPERLESS_API_TOKEN", &pl.token)
        .env("CANDLELIGHT_DATA_DIR", data)
        .env("CANDLELIGHT_MODELS_DIR", data.join("no-models"))
        .output()
        .unwrap();
    common::json_stdout(&out)
}

#[test]
fn undo_takes_back_our_writes_and_keeps_what_the_user_changed_since() {
    let _one = common::serial();
    let pl = RealPaperless::start();
    let run = real_paperless::run_id();
    let id = pl.upload(
        &format!("scan-{run}"),
        &format!(
            "Stadtwerke Musterstadt GmbH\nJahresverbrauchsabrechnung Strom\n\
             Kundennummer K{run}, Zählernummer Z{run}\n\
             Rechnung Nr. 4711-2025, Rechnungsdatum: 14.02.2025\n\
             Verbrauch 2.310 Kilowattstunden, Arbeitspreis 0,31 EUR, Grundpreis 12,50 EUR.\n\
             Gesamtbetrag 866,10 EUR, fällig am 01.03.2025."
        ),
    );
    // Created after the upload, so that Paperless's own matching at consumption did not set
    // them: our classifier applies the owner's rules, and they decide what we write. They
    // match this run's numbers only (the instance keeps earlier runs' rules), and are shared
    // (unowned): the document's owner may see them.
    let strom = format!("Strom {run}");
    pl.post(
        "/api/tags/",
        json!({"name": strom, "matching_algorithm": 1, "match": format!("Z{run}"), "owner": null}),
    );
    let abrechnung = format!("Abrechnung {run}");
    let type_id = pl.post(
        "/api/document_types/",
        json!({"name": abrechnung, "matching_algorithm": 1, "match": format!("K{run}"), "owner": null}),
    )["id"]
        .as_i64()
        .unwrap();
    let privat = pl.object("tags", &format!("Privat {run}"));
    // A run's own owner: earlier runs' documents (labelled alike) are not its neighbours.
    let jo = pl.user(&format!("jo{run}"));
    pl.patch(&format!("/api/documents/{id}/"), json!({"owner": jo}));
    let original = pl.get(&format!("/api/documents/{id}/"));
    assert!(original["document_type"].is_null());

    let data = tempfile::tempdir().unwrap();
    let s = pl.serve(data.path(), &[]);
    let (st, written) = s.post("/api/classify", json!({"document_id": id}));
    assert_eq!(st, 200, "{written}");
    assert_eq!(written["outcome"], "applied", "{written}");
    assert_eq!(written["suggestion"]["document_type"], abrechnung.as_str());
    assert!(written["applied"]["added_tags"]
        .as_array()
        .unwrap()
        .contains(&json!(strom)));

    // The journal has the write, with the values before and after.
    let journal = s.get_json(&format!("/api/paperless/journal?document_id={id}"));
    let records = journal["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{journal}");
    assert_eq!(records[0]["action"], "write");
    assert_eq!(records[0]["trigger"], "api");
    assert_eq!(records[0]["before"]["document_type"], Value::Null);
    assert_eq!(records[0]["after"]["document_type"], json!(type_id));
    assert_eq!(records[0]["before"]["title"], original["title"]);

    // The user then renames the document and adds a tag of their own.
    let users_title = format!("Mein Stromtitel {run}");
    pl.patch(
        &format!("/api/documents/{id}/"),
        json!({"title": users_title}),
    );
    pl.post(
        "/api/documents/bulk_edit/",
        json!({"documents": [id], "method": "modify_tags",
               "parameters": {"add_tags": [privat], "remove_tags": []}}),
    );

    // A restart in between: the journal is on disk.
    drop(s);
    let s = pl.serve(data.path(), &[]);
    let (st, undo) = s.post("/api/paperless/undo", json!({"document_id": id}));
    assert_eq!(st, 200, "{undo}");
    assert_eq!(undo["outcome"], "undone", "{undo}");
    // Exactly the tags we added (on a shared instance, other runs' look-alike tags may be among
    // them), and nothing else.
    let sorted = |v: &Value| {
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let ours = sorted(&written["applied"]["added_tags"]);
    assert_eq!(sorted(&undo["removed_tags"]), ours, "{undo}");
    let kept = undo["kept"].to_string();
    assert!(kept.contains("title"), "{undo}");
    assert!(kept.contains("ai-processed"), "{undo}");

    let now = pl.get(&format!("/api/documents/{id}/"));
    assert_eq!(now["document_type"], Value::Null, "our type is taken back");
    assert_eq!(now["title"], users_title.as_str(), "the user's title stays");
    assert_eq!(now["created"], original["created"]);
    let tags = pl.tag_names(&now);
    assert!(!tags.iter().any(|t| ours.contains(t)), "{tags:?}");
    assert!(
        tags.contains(&format!("Privat {run}")),
        "the user's tag stays: {tags:?}"
    );
    assert!(
        tags.contains(&"ai-processed".to_owned()),
        "the marker stays, so polling does not classify it again: {tags:?}"
    );

    // Undone once: a second undo has nothing left to take back.
    let (st, again) = s.post("/api/paperless/undo", json!({"document_id": id}));
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["outcome"], "nothing_to_undo", "{again}");
    drop(s);

    // The command line reads the same journal.
    let listed = cli_undo(
        &pl,
        data.path(),
        &["--list", "--document-id", &id.to_string()],
    );
    let actions: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["write", "undo"]);
    let report = cli_undo(&pl, data.path(), &["--document-id", &id.to_string()]);
    assert_eq!(report["outcome"], "nothing_to_undo");
}

#[test]
fn undo_without_paperless_or_with_a_bad_id_is_a_clear_error() {
    let s = Server::start(&[]);
    let (st, r) = s.post("/api/paperless/undo", json!({"document_id": 3}));
    assert_eq!(st, 503, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("PAPERLESS_URL"),
        "{r}"
    );
    let (st, r) = s.post("/api/paperless/undo", json!({"document_id": "x"}));
    assert_eq!(st, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("document_id"), "{r}");
}

#[test]
fn a_blank_scan_gets_the_failure_tag_with_the_reason_and_no_invented_metadata() {
    let _one = common::serial();
    let pl = RealPaperless::start();
    let run = real_paperless::run_id();
    // What OCR leaves of a blank page: stray marks, no words.
    let id = pl.upload(&format!("{run}"), "| ~ ,, ii l1 . :: —— %% 0O0 ¦ ' ' _ =");
    let inbox = pl.object("tags", &format!("inbox-{run}"));
    pl.post(
        "/api/documents/bulk_edit/",
        json!({"documents": [id], "method": "modify_tags",
               "parameters": {"add_tags": [inbox], "remove_tags": []}}),
    );
    let before = pl.get(&format!("/api/documents/{id}/"));
    let data = tempfile::tempdir().unwrap();
    // Polling only this run's inbox: the shared instance holds other runs' documents.
    let inbox_name = format!("inbox-{run}");
    let s = pl.serve(
        data.path(),
        &[
            ("SCAN_INTERVAL", "1s"),
            ("PROCESS_PREDEFINED_DOCUMENTS", "yes"),
            ("TAGS", &inbox_name),
        ],
    );
    let start = std::time::Instant::now();
    let failed = loop {
        let doc = pl.get(&format!("/api/documents/{id}/"));
        let names = pl.tag_names(&doc);
        if names.contains(&"ai-failed".to_owned()) {
            break doc;
        }
        assert!(
            start.elapsed().as_secs() < 120,
            "no failure tag: {names:?}\n{}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    for field in ["title", "correspondent", "document_type", "created"] {
        assert_eq!(failed[field], before[field], "{field} was made up");
    }
    assert!(
        !pl.tag_names(&failed).contains(&"ai-processed".to_owned()),
        "a failed document is not marked processed"
    );
    assert!(s.log().contains("no readable text"), "{}", s.log());
    let journal = s.get_json(&format!("/api/paperless/journal?document_id={id}"));
    let r = &journal["records"][0];
    assert_eq!(r["trigger"], "give_up", "{journal}");
    assert!(
        r["reason"].as_str().unwrap().contains("blank scan"),
        "{journal}"
    );

    // The user puts the page's text in and removes the failure tag: the next poll tries again.
    pl.patch(
        &format!("/api/documents/{id}/"),
        json!({"content": "Stadtwerke Musterstadt GmbH\nStromrechnung\n\
                           Rechnungsdatum: 14.02.2025\nGesamtbetrag 344,10 EUR."}),
    );
    let failed_tag = pl.object("tags", "ai-failed");
    pl.post(
        "/api/documents/bulk_edit/",
        json!({"documents": [id], "method": "modify_tags",
               "parameters": {"add_tags": [], "remove_tags": [failed_tag]}}),
    );
    let start = std::time::Instant::now();
    loop {
        let names = pl.tag_names(&pl.get(&format!("/api/documents/{id}/")));
        if names.contains(&"ai-processed".to_owned()) {
            assert!(!names.contains(&"ai-failed".to_owned()), "{names:?}");
            break;
        }
        assert!(
            start.elapsed().as_secs() < 120,
            "not retried after the failure tag was removed: {names:?}\n{}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn review_mode_parks_the_suggestion_until_the_user_removes_the_review_tag() {
    let _one = common::serial();
    let pl = RealPaperless::start();
    let run = real_paperless::run_id();
    // This run's inbox tag selects what polling sees (the instance keeps other runs' documents).
    let inbox_name = format!("Eingang {run}");
    let inbox = pl.object("tags", &inbox_name);
    let title = format!("review-{run}");
    pl.submit(
        &title,
        &format!(
            "Stadtwerke Musterstadt GmbH\nAbrechnung Wasser\nKundennummer K{run}\n\
             Rechnungsdatum: 14.02.2025\nGesamtbetrag 212,40 EUR, fällig am 01.03.2025."
        ),
        &[inbox],
    );
    let id = pl.consumed(&title);
    // After the upload, so Paperless's own matching did not set it; shared, so the owner sees it.
    let kind = format!("Wasserabrechnung {run}");
    let type_id = pl.post(
        "/api/document_types/",
        json!({"name": kind, "matching_algorithm": 1, "match": format!("K{run}"), "owner": null}),
    )["id"]
        .as_i64()
        .unwrap();
    let review = format!("prüfen {run}");

    let data = tempfile::tempdir().unwrap();
    let s = pl.serve(
        data.path(),
        &[
            ("CANDLELIGHT_REVIEW_TAG", review.as_str()),
            ("PROCESS_PREDEFINED_DOCUMENTS", "yes"),
            ("TAGS", inbox_name.as_str()),
        ],
    );
    let (st, parked) = s.post("/api/classify", json!({"document_id": id}));
    assert_eq!(st, 200, "{parked}");
    assert_eq!(parked["outcome"], "parked", "{parked}");
    assert_eq!(
        parked["suggestion"]["document_type"],
        kind.as_str(),
        "{parked}"
    );
    let doc = pl.get(&format!("/api/documents/{id}/"));
    assert_eq!(
        doc["document_type"],
        Value::Null,
        "nothing written yet: {doc}"
    );
    assert_eq!(doc["title"], title.as_str());
    let tags = pl.tag_names(&doc);
    assert!(tags.contains(&review), "{tags:?}");
    assert!(!tags.contains(&"ai-processed".to_owned()), "{tags:?}");
    drop(s);

    // With polling on, a document under review is left alone…
    let s = pl.serve(
        data.path(),
        &[
            ("CANDLELIGHT_REVIEW_TAG", review.as_str()),
            ("PROCESS_PREDEFINED_DOCUMENTS", "yes"),
            ("TAGS", inbox_name.as_str()),
            ("SCAN_INTERVAL", "1s"),
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        pl.get(&format!("/api/documents/{id}/"))["document_type"],
        Value::Null
    );
    // …until the user, having looked, removes the review tag: then it is written as parked.
    let review_id = pl.object("tags", &review);
    pl.post(
        "/api/documents/bulk_edit/",
        json!({"documents": [id], "method": "modify_tags",
               "parameters": {"add_tags": [], "remove_tags": [review_id]}}),
    );
    let start = std::time::Instant::now();
    let doc = loop {
        let doc = pl.get(&format!("/api/documents/{id}/"));
        if pl.tag_names(&doc).contains(&"ai-processed".to_owned()) {
            break doc;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the reviewed suggestion was not written: {}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(doc["document_type"], json!(type_id), "{doc}");
    assert!(!pl.tag_names(&doc).contains(&review));
    let journal = s.get_json(&format!("/api/paperless/journal?document_id={id}"));
    let actions: Vec<&str> = journal["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["park", "write"], "{journal}");
}

/// A custom field of this instance named `name` (created if missing; definitions are the
/// instance's, shared by every run): its id.
fn custom_field(pl: &RealPaperless, name: &str, data_type: &str) -> i64 {
    let found = pl.get("/api/custom_fields/?page_size=1000");
    if let Some(f) = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
    {
        return f["id"].as_i64().unwrap();
    }
    pl.post(
        "/api/custom_fields/",
        json!({"name": name, "data_type": data_type}),
    )["id"]
        .as_i64()
        .unwrap()
}

/// The document's custom field values by field id (absent: the field is not on it).
fn field_values(pl: &RealPaperless, id: i64) -> std::collections::HashMap<i64, Value> {
    pl.get(&format!("/api/documents/{id}/"))["custom_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_i64().unwrap(), f["value"].clone()))
        .collect()
}

#[test]
fn custom_fields_and_the_storage_path_are_filled_by_paperless_rules_and_undone() {
    let _one = common::serial();
    let pl = RealPaperless::start();
    let run = real_paperless::run_id();
    let amount = custom_field(&pl, "Betrag", "monetary");
    let number = custom_field(&pl, "Rechnungsnummer", "string");
    let due = custom_field(&pl, "Fällig am", "date");
    let iban = custom_field(&pl, "IBAN", "string");
    let id = pl.upload(
        &format!("fields-{run}"),
        &format!(
            "Stadtwerke Musterstadt GmbH\nJahresverbrauchsabrechnung Strom, Zähler Z{run}\n\
             Rechnung Nr. R-{run}, Rechnungsdatum: 14.02.2025\n\
             Verbrauch 2.310 Kilowattstunden, Arbeitspreis 0,31 EUR, Grundpreis 12,50 EUR.\n\
             Gesamtbetrag 866,10 EUR, fällig am 01.03.2025.\n\
             Bankverbindung: IBAN DE89 3704 0044 0532 0130 00"
        ),
    );
    // Created after the upload, so that Paperless's own matching at consumption did not set
    // it: the owner's rule decides what we write.
    let path = pl.post(
        "/api/storage_paths/",
        json!({"name": format!("Haus {run}"), "path": format!("haus-{run}/{{{{ title }}}}"),
               "matching_algorithm": 1, "match": format!("Z{run}"), "owner": null}),
    )["id"]
        .as_i64()
        .unwrap();
    // The owner already typed an IBAN of their own, and attached the number field empty.
    let users_iban = "DE02120300000000202051";
    pl.post(
        "/api/documents/bulk_edit/",
        json!({"documents": [id], "method": "modify_custom_fields",
               "parameters": {"add_custom_fields": {iban.to_string(): users_iban,
                                                    number.to_string(): null},
                              "remove_custom_fields": []}}),
    );

    let data = tempfile::tempdir().unwrap();
    let env = [
        (
            "CANDLELIGHT_CUSTOM_FIELDS",
            "Betrag, Rechnungsnummer, Fällig am, IBAN, Farbe",
        ),
        (
            "CANDLELIGHT_WRITE_FIELDS",
            "title,correspondent,document_type,tags,created,storage_path",
        ),
    ];
    let s = pl.serve(data.path(), &env);
    let (st, r) = s.post("/api/classify", json!({"document_id": id}));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["outcome"], "applied", "{r}");
    let v = field_values(&pl, id);
    assert_eq!(v[&amount], "EUR866.10", "{r}");
    assert_eq!(
        v[&number],
        format!("R-{run}").as_str(),
        "filled where it was empty: {r}"
    );
    assert_eq!(v[&due], "2025-03-01", "{r}");
    assert_eq!(
        v[&iban], users_iban,
        "the owner's value is never replaced: {r}"
    );
    assert!(r["applied"]["kept"].to_string().contains("IBAN"), "{r}");
    assert!(
        s.log().contains("Farbe"),
        "an unknown field name is reported"
    );
    let doc = pl.get(&format!("/api/documents/{id}/"));
    assert_eq!(doc["storage_path"], path, "the owner's rule chose it: {r}");

    // The journal has the field changes; the owner then corrects the amount.
    let journal = s.get_json(&format!("/api/paperless/journal?document_id={id}"));
    assert_eq!(
        journal["records"][0]["custom_fields"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{journal}"
    );
    pl.post(
        "/api/documents/bulk_edit/",
        json!({"documents": [id], "method": "modify_custom_fields",
               "parameters": {"add_custom_fields": {amount.to_string(): "EUR900.00"},
                              "remove_custom_fields": []}}),
    );
    let (st, undo) = s.post("/api/paperless/undo", json!({"document_id": id}));
    assert_eq!(st, 200, "{undo}");
    let v = field_values(&pl, id);
    assert_eq!(
        v[&amount], "EUR900.00",
        "the owner's correction stays: {undo}"
    );
    assert_eq!(
        v[&number],
        Value::Null,
        "back to empty, still attached: {undo}"
    );
    assert!(
        !v.contains_key(&due),
        "a field we attached is taken off: {undo}"
    );
    assert_eq!(v[&iban], users_iban);
    let doc = pl.get(&format!("/api/documents/{id}/"));
    assert_eq!(doc["storage_path"], Value::Null, "{undo}");
}
