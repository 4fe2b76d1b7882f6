//! The classifier learning from a real Paperless-ngx archive (../shared/paperless-ngx, started
//! by the test): the owner's labels on similar documents decide a type the text alone cannot
//! (an owner's own category, named as they like); a document never learns from documents of
//! another owner; our own unreviewed output is never learned from; and the index survives a
//! restart without embedding anything again.

mod common;
mod real_paperless;

use std::time::{Duration, Instant};

use common::Server;
use real_paperless::RealPaperless;
use serde_json::{json, Value};

/// Minutes of a homeowners' meeting: no word of it says "invoice", "letter" or any kind the
/// classifier knows; only the owner's archive says what they call these.
fn minutes(n: usize, street: &str) -> String {
    format!(
        "Niederschrift über die ordentliche Eigentümerversammlung Nr. {n}\n\
         Wohnungseigentümergemeinschaft {street}\n\
         Beginn 18:30 Uhr im Gemeinschaftsraum. Die Versammlung ist beschlussfähig.\n\
         TOP 1: Wahl des Versammlungsleiters. TOP 2: Jahresabrechnung und Entlastung des \
         Verwalters. TOP 3: Sanierung der Tiefgarage, Beschlussfassung über die Sonderumlage.\n\
         TOP 4: Verschiedenes. Abstimmungsergebnis: {n} Ja-Stimmen, 2 Nein-Stimmen, 1 \
         Enthaltung. Der Beschluss ist angenommen.\n\
         Ende der Versammlung 21:15 Uhr. Protokollführer: Verwaltungsbeirat."
    )
}

fn wait_for(s: &Server, what: &str, n: usize) {
    let start = Instant::now();
    while s.log().matches(what).count() < n {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no '{what}' in the log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn neighbour_ids(report: &Value) -> Vec<i64> {
    report["explanation"]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn the_archive_teaches_the_owners_names_within_each_owner_and_never_our_own_output() {
    let _one = common::serial();
    let pl = RealPaperless::start();
    let run = real_paperless::run_id();
    let ours_type = pl.object("document_types", &format!("Hausverwaltung-Kram {run}"));
    let bobs_type = pl.object("document_types", &format!("Vereinspost {run}"));
    let tag = pl.object("tags", &format!("WEG {run}"));
    // Two owners of this run only: the instance is shared by every run on the machine
    // (`start` keeps its data), and documents of earlier runs belong to earlier owners, so
    // they can never be this run's neighbours.
    let ann = pl.user(&format!("ann{run}"));
    let bob = pl.user(&format!("bob{run}"));
    let mut anns = Vec::new();
    for i in 0..3 {
        let id = pl.upload(&format!("weg-{run}-{i}"), &minutes(10 + i, "Lindenweg 4"));
        pl.patch(
            &format!("/api/documents/{id}/"),
            json!({"document_type": ours_type, "tags": [tag], "owner": ann}),
        );
        anns.push(id);
    }
    let mut bobs = Vec::new();
    for i in 0..3 {
        let id = pl.upload(&format!("bob-{run}-{i}"), &minutes(20 + i, "Lindenweg 4"));
        pl.patch(
            &format!("/api/documents/{id}/"),
            json!({"document_type": bobs_type, "owner": bob}),
        );
        bobs.push(id);
    }
    let new_ann = pl.upload(&format!("neu-{run}"), &minutes(31, "Lindenweg 4"));
    pl.patch(&format!("/api/documents/{new_ann}/"), json!({"owner": ann}));
    let new_bob = pl.upload(&format!("neu-bob-{run}"), &minutes(32, "Lindenweg 4"));
    pl.patch(&format!("/api/documents/{new_bob}/"), json!({"owner": bob}));

    let data = tempfile::tempdir().unwrap();
    let s = pl.serve(data.path(), &[]);
    wait_for(&s, "archive index updated", 1);
    let classify = |s: &Server, id: i64, dry: bool| {
        let (st, r) = s.post("/api/classify", json!({"document_id": id, "dry_run": dry}));
        assert_eq!(st, 200, "{r}");
        r
    };

    // The owner's own category, learned from their labelled minutes.
    let r = classify(&s, new_ann, true);
    assert_eq!(
        r["suggestion"]["document_type"],
        format!("Hausverwaltung-Kram {run}"),
        "{r}"
    );
    assert_eq!(r["explanation"]["document_type"]["by"], "neighbours", "{r}");
    assert!(r["suggestion"]["tags"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("WEG {run}"))));
    let seen = neighbour_ids(&r);
    assert!(seen.iter().any(|id| anns.contains(id)), "{seen:?}");
    assert!(
        !seen.iter().any(|id| bobs.contains(id)),
        "another owner's documents were consulted: {seen:?}"
    );
    // Bob's document learns Bob's labels, and never Ann's.
    let r = classify(&s, new_bob, true);
    assert_eq!(
        r["suggestion"]["document_type"],
        format!("Vereinspost {run}"),
        "{r}"
    );
    let seen = neighbour_ids(&r);
    assert!(!seen.iter().any(|id| anns.contains(id)), "{seen:?}");

    // Our own answer, written to Paperless, is not learned from.
    let written = classify(&s, new_ann, false);
    assert_eq!(written["outcome"], "applied", "{written}");
    drop(s);
    let s = pl.serve(data.path(), &[]);
    wait_for(&s, "listening on", 1);
    // The restart reads the index from disk: only the one document we changed comes back from
    // the sync, and it is not embedded.
    let start = Instant::now();
    let index = loop {
        let files: Vec<_> = std::fs::read_dir(data.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["written"].get(new_ann.to_string()).is_some() || start.elapsed().as_secs() > 60 {
            break v;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let entries = index["entries"].as_object().unwrap();
    for id in anns.iter().chain(&bobs) {
        assert!(entries.contains_key(&id.to_string()), "{id} not indexed");
    }
    assert!(
        !entries.contains_key(&new_ann.to_string()),
        "our own unreviewed output was learned from"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !s.log().contains("archive index updated embedded="),
        "the restart embedded documents again:\n{}",
        s.log()
    );
}
