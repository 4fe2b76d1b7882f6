//! The Paperless side against a fake Paperless-ngx on loopback that behaves like the recorded
//! fixtures (../shared/paperless-fixtures): the client, the safe write-back, and the triggers
//! (webhook, polling, /api/classify, CLI, post-consume script) with the real model.

mod common;
mod fake_paperless;

use std::time::Duration;

use candlelight::paperless::apply::{apply, Policy};
use candlelight::paperless::client::Kind;
use candlelight::paperless::{PaperlessClient, PaperlessError, Suggestion};
use common::{wait_until, Server};
use fake_paperless::{Doc, FakePaperless, Fault, Obj, State, TOKEN};
use serde_json::{json, Value};

const FINANCE: i64 = 1;
const AI_PROCESSED: i64 = 2;
const BANKING: i64 = 7;
const TAX: i64 = 8;
const ACME: i64 = 1;
const INVOICE: i64 = 1;

fn client(fake: &FakePaperless) -> PaperlessClient {
    PaperlessClient::new(&fake.url, TOKEN)
        .unwrap()
        .with_retries(2, Duration::from_millis(20))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn suggestion() -> Suggestion {
    Suggestion {
        title: "Acme Corporation invoice 2024-0387".into(),
        correspondent: Some("Acme Corporation".into()),
        document_type: Some("Invoice".into()),
        tags: vec!["Finance".into(), "Banking".into()],
        created: Some("2024-03-14".into()),
        ..Suggestion::default()
    }
}

/// Applies `s` to document `id` the way the worker does: fresh document, fresh taxonomy.
fn run_apply(
    fake: &FakePaperless,
    id: i64,
    s: &Suggestion,
    policy: &Policy,
    dry_run: bool,
) -> Result<candlelight::paperless::Applied, PaperlessError> {
    let c = client(fake);
    rt().block_on(async {
        let doc = c.document(id).await?;
        let taxonomy = c.taxonomy().await?;
        apply(&c, &doc, s, &taxonomy, policy, dry_run).await
    })
}

fn doc(fake: &FakePaperless, id: i64) -> Doc {
    fake.with(|s| s.documents[&id].clone())
}

fn writes(fake: &FakePaperless) -> usize {
    fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.method != "GET" && r.status < 300)
            .count()
    })
}

#[test]
fn taxonomy_follows_next_over_several_pages() {
    let mut state = State::seeded();
    for i in 0..230 {
        let id = 1000 + i;
        state.tags.insert(
            id,
            Obj {
                id,
                name: format!("bulk-{i:03}"),
                owner: Some(2),
                matching_algorithm: 1,
            },
        );
    }
    let fake = FakePaperless::start_with(state);
    let t = rt().block_on(client(&fake).taxonomy()).unwrap();
    assert_eq!(t.tags.len(), 237, "every tag of every page");
    let mut ids: Vec<i64> = t.tags.iter().map(|n| n.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 237, "no page read twice");
    assert!(fake.with(|s| s.count("GET", "/api/tags/")) >= 3);
    assert_eq!(t.correspondents.len(), 5);
    assert_eq!(t.document_types.len(), 5);
}

#[test]
fn merge_never_drops_a_tag_the_user_set() {
    let fake = FakePaperless::start();
    fake.with(|s| s.documents.get_mut(&1).unwrap().tags = vec![TAX, FINANCE]);
    let applied = run_apply(&fake, 1, &suggestion(), &Policy::default(), false).unwrap();
    let d = doc(&fake, 1);
    for t in [TAX, FINANCE, BANKING, AI_PROCESSED] {
        assert!(d.tags.contains(&t), "tag {t} in {:?}", d.tags);
    }
    assert_eq!(d.tags.len(), 4);
    assert_eq!(applied.added_tags, vec!["Banking"]);
    assert!(applied.marked_processed);
    assert_eq!(d.correspondent, Some(ACME));
    assert_eq!(d.document_type, Some(INVOICE));
    assert_eq!(d.created, "2024-03-14");
    assert_eq!(d.title, "Acme Corporation invoice 2024-0387");
    // The tag list is never PATCHed (that would replace it); tags go through bulk_edit.
    let patched_tags = fake.with(|s| {
        s.requests
            .iter()
            .any(|r| r.method == "PATCH" && r.body.get("tags").is_some())
    });
    assert!(!patched_tags);
}

#[test]
fn fields_the_user_set_are_kept_unless_overwrite_is_configured() {
    let fake = FakePaperless::start();
    fake.with(|s| {
        let d = s.documents.get_mut(&2).unwrap();
        d.title = "My phone bill".into();
        d.correspondent = Some(3);
        d.document_type = Some(6);
    });
    let applied = run_apply(&fake, 2, &suggestion(), &Policy::default(), false).unwrap();
    let d = doc(&fake, 2);
    assert_eq!(d.title, "My phone bill");
    assert_eq!(d.correspondent, Some(3));
    assert_eq!(d.document_type, Some(6));
    assert_eq!(applied.kept.len(), 3, "{:?}", applied.kept);

    let fake = FakePaperless::start();
    fake.with(|s| s.documents.get_mut(&2).unwrap().correspondent = Some(3));
    let overwrite = Policy {
        overwrite: true,
        ..Policy::default()
    };
    run_apply(&fake, 2, &suggestion(), &overwrite, false).unwrap();
    assert_eq!(doc(&fake, 2).correspondent, Some(ACME));
}

#[test]
fn a_second_run_changes_nothing() {
    let fake = FakePaperless::start();
    run_apply(&fake, 1, &suggestion(), &Policy::default(), false).unwrap();
    let after_first = doc(&fake, 1);
    let writes_before = writes(&fake);
    // Even a different answer the second time must not rewrite what the first run set.
    let other = Suggestion {
        title: "Something else".into(),
        created: Some("2024-01-01".into()),
        correspondent: Some("Northwind Traders".into()),
        ..suggestion()
    };
    let again = run_apply(&fake, 1, &other, &Policy::default(), false).unwrap();
    assert!(!again.changed_anything(), "{again:?}");
    assert_eq!(writes(&fake), writes_before, "no write at all");
    let d = doc(&fake, 1);
    assert_eq!(
        (d.title, d.tags, d.created, d.correspondent),
        (
            after_first.title,
            after_first.tags,
            after_first.created,
            after_first.correspondent
        )
    );
}

#[test]
fn dry_run_writes_nothing() {
    let fake = FakePaperless::start();
    let before = doc(&fake, 1);
    let applied = run_apply(&fake, 1, &suggestion(), &Policy::default(), true).unwrap();
    assert!(applied.dry_run);
    assert_eq!(applied.fields["correspondent"], json!(ACME));
    assert_eq!(writes(&fake), 0);
    assert_eq!(doc(&fake, 1).tags, before.tags);
}

#[test]
fn a_name_created_concurrently_is_looked_up_again_not_duplicated() {
    let fake = FakePaperless::start();
    // Another client creates "Stadtwerke Köln" between our lookup and our create.
    fake.with(|s| {
        s.correspondents.insert(
            50,
            Obj {
                id: 50,
                name: "Stadtwerke Köln".into(),
                owner: None,
                matching_algorithm: 1,
            },
        );
        s.stale_lookups.push("Stadtwerke Köln".into());
    });
    let s = Suggestion {
        correspondent: Some("Stadtwerke Köln".into()),
        ..suggestion()
    };
    let policy = Policy {
        create_correspondents: true,
        ..Policy::default()
    };
    // The taxonomy the classifier saw did not have it yet.
    let c = client(&fake);
    let applied = rt()
        .block_on(async {
            let d = c.document(1).await?;
            let mut t = c.taxonomy().await?;
            t.correspondents.retain(|n| n.id != 50);
            apply(&c, &d, &s, &t, &policy, false).await
        })
        .unwrap();
    assert_eq!(doc(&fake, 1).correspondent, Some(50));
    assert!(applied.created_objects.is_empty(), "{applied:?}");
    let named = fake.with(|s| {
        s.correspondents
            .values()
            .filter(|o| o.name.to_lowercase() == "stadtwerke köln")
            .count()
    });
    assert_eq!(named, 1, "no duplicate");
    let rejected = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/api/correspondents/" && r.status == 400)
            .count()
    });
    assert_eq!(rejected, 1, "the create met the duplicate-name 400");
}

#[test]
fn names_are_found_ignoring_case_before_anything_is_created() {
    let fake = FakePaperless::start();
    fake.with(|s| {
        s.correspondents.insert(
            60,
            Obj {
                id: 60,
                name: "Müller & Söhne GmbH".into(),
                owner: Some(2),
                matching_algorithm: 1,
            },
        )
    });
    let c = client(&fake);
    let found = rt()
        .block_on(c.find(Kind::Correspondent, "MÜLLER & SÖHNE GMBH", None))
        .unwrap();
    assert_eq!(found.map(|n| n.id), Some(60));
    let (n, created) = rt()
        .block_on(c.find_or_create(Kind::Correspondent, "müller & söhne gmbh", None, None, None))
        .unwrap();
    assert_eq!((n.id, created), (60, false));
    assert_eq!(fake.with(|s| s.count("POST", "/api/correspondents/")), 0);
}

#[test]
fn a_missing_ai_tag_is_created_unowned_and_never_auto_matched() {
    let fake = FakePaperless::start();
    fake.with(|s| {
        s.tags.remove(&AI_PROCESSED);
    });
    let policy = Policy {
        ai_tag: Some("classified-by-ai".into()),
        ..Policy::default()
    };
    run_apply(&fake, 3, &suggestion(), &policy, false).unwrap();
    let tag = fake.with(|s| {
        s.tags
            .values()
            .find(|t| t.name == "classified-by-ai")
            .cloned()
    });
    let tag = tag.expect("created");
    assert_eq!(tag.owner, None);
    assert_eq!(tag.matching_algorithm, 0);
    assert!(doc(&fake, 3).tags.contains(&tag.id));
}

#[test]
fn a_server_error_is_retried_and_then_succeeds() {
    let fake = FakePaperless::start();
    fake.with(|s| {
        s.faults.push(Fault {
            method: "PATCH".into(),
            path_prefix: "/api/documents/1/".into(),
            status: 500,
            times: 1,
        })
    });
    run_apply(&fake, 1, &suggestion(), &Policy::default(), false).unwrap();
    assert_eq!(fake.with(|s| s.count("PATCH", "/api/documents/1/")), 2);
    assert!(doc(&fake, 1).tags.contains(&AI_PROCESSED));
}

#[test]
fn an_outage_midway_leaves_the_document_unmarked_and_a_retry_finishes_it() {
    let fake = FakePaperless::start();
    fake.with(|s| {
        s.documents.get_mut(&1).unwrap().tags = vec![TAX];
        // The PATCH goes through, then bulk_edit (tags, marker) keeps failing.
        s.faults.push(Fault {
            method: "POST".into(),
            path_prefix: "/api/documents/bulk_edit/".into(),
            status: 503,
            times: 100,
        });
    });
    let err = run_apply(&fake, 1, &suggestion(), &Policy::default(), false).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("unavailable"), "{err}");
    let d = doc(&fake, 1);
    assert!(!d.tags.contains(&AI_PROCESSED), "not marked: {:?}", d.tags);
    assert!(d.tags.contains(&TAX), "nothing lost");

    fake.with(|s| s.faults.clear());
    run_apply(&fake, 1, &suggestion(), &Policy::default(), false).unwrap();
    let d = doc(&fake, 1);
    for t in [TAX, FINANCE, BANKING, AI_PROCESSED] {
        assert!(d.tags.contains(&t), "tag {t} in {:?}", d.tags);
    }
}

#[test]
fn auth_and_missing_documents_give_clear_errors() {
    let fake = FakePaperless::start();
    let bad = PaperlessClient::new(&fake.url, "wrong").unwrap();
    let e = rt().block_on(bad.document(1)).unwrap_err();
    assert!(matches!(e, PaperlessError::Unauthorized(_)), "{e}");
    assert!(e.to_string().contains("Invalid token."), "{e}");
    assert!(e.to_string().contains("PAPERLESS_API_TOKEN"), "{e}");
    let e = rt().block_on(client(&fake).document(999_999)).unwrap_err();
    assert!(matches!(e, PaperlessError::NotFound(_)), "{e}");
    fake.with(|s| s.down = true);
    let e = rt().block_on(client(&fake).probe()).unwrap_err();
    assert!(e.is_transient(), "{e}");
    // Every request carried the token and asked for API version 9 with a trailing slash.
    assert!(fake.with(|s| s.requests.iter().all(|r| r.path.ends_with('/'))));
}

// ---- With the real model and a real `candlelight serve` ----

fn serve_with(fake: &FakePaperless, extra_env: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("PAPERLESS_URL", fake.url.as_str()),
        ("PAPERLESS_API_TOKEN", TOKEN),
        ("SCAN_INTERVAL", "0"),
    ];
    env.extend_from_slice(extra_env);
    Server::start_with_env(&[], &env)
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(300))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn webhook_with_a_string_id_is_queued_classified_and_does_not_loop() {
    let _serial = common::serial();
    let fake = FakePaperless::start();
    let server = serve_with(&fake, &[]);
    let hook = format!("{}/api/paperless/webhook", server.url);
    // Like a "Document Updated" workflow without a tag filter: every write calls us back.
    fake.with(|s| s.webhook_url = Some(hook.clone()));

    let (status, body) = post(&hook, &json!({"document_id": "3", "title": "bank"}));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["document_id"], 3);
    assert_eq!(body["status"], "queued");
    // Answered before the work was done (Paperless gives webhooks 5 s).
    assert!(!doc(&fake, 3).tags.contains(&AI_PROCESSED));

    wait_until("document 3 marked", Duration::from_secs(180), || {
        doc(&fake, 3).tags.contains(&AI_PROCESSED)
    });
    // Our writes fired "document updated" webhooks back at us; give them time to arrive.
    wait_until("the echo webhooks", Duration::from_secs(30), || {
        fake.with(|s| s.webhooks_sent) >= 2
    });
    std::thread::sleep(Duration::from_secs(3));
    let d = doc(&fake, 3);
    assert!(d.correspondent.is_some() || d.document_type.is_some() || d.tags.len() > 1);
    let patches = fake.with(|s| s.count("PATCH", "/api/documents/3/"));
    assert!(patches <= 1, "the classifier looped: {patches} PATCHes");
    let log = server.log();
    assert_eq!(
        log.matches("paperless document done").count(),
        1,
        "classified once, echoes ignored: {log}"
    );
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            "candlelight_paperless_documents_total{outcome=\"applied\",trigger=\"webhook\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("candlelight_paperless_document_seconds_count 1"));

    // Bad webhook bodies get a clear 400, not a queued nothing.
    let (status, body) = post(&hook, &json!({"title": "no id"}));
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("doc_id"), "{body}");
}

#[test]
fn api_classify_by_document_id_reports_and_dry_run_writes_nothing() {
    let _serial = common::serial();
    let fake = FakePaperless::start();
    let server = serve_with(&fake, &[]);
    let url = format!("{}/api/classify", server.url);

    let (status, dry) = post(&url, &json!({"document_id": "1", "dry_run": true}));
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["outcome"], "dry_run");
    assert_eq!(dry["applied"]["dry_run"], true);
    assert!(dry["suggestion"]["title"].as_str().unwrap().len() >= 3);
    assert!(dry["timings"]["classify_ms"].as_u64().unwrap() > 0);
    assert_eq!(writes(&fake), 0, "dry run wrote");

    let (status, real) = post(&url, &json!({"document_id": 1}));
    assert_eq!(status, 200, "{real}");
    assert_eq!(real["outcome"], "applied");
    assert_eq!(
        real["suggestion"], dry["suggestion"],
        "same answer both times"
    );
    let d = doc(&fake, 1);
    assert!(d.tags.contains(&AI_PROCESSED));
    // The invoice names Acme Corporation: the only correspondent the text supports.
    assert_eq!(d.correspondent, Some(ACME), "{real}");

    let (status, again) = post(&url, &json!({"document_id": 1}));
    assert_eq!(status, 200);
    assert_eq!(again["outcome"], "unchanged", "{again}");

    let (status, missing) = post(&url, &json!({"document_id": 999999}));
    assert_eq!(status, 404, "{missing}");
    assert!(missing["error"]
        .as_str()
        .unwrap()
        .contains("No Document matches"));
    let (status, bad) = post(&url, &json!({"document_id": "abc"}));
    assert_eq!(status, 400, "{bad}");
}

#[test]
fn polling_processes_only_selected_unprocessed_documents() {
    let _serial = common::serial();
    let fake = FakePaperless::start();
    fake.with(|s| {
        s.tags.insert(
            70,
            Obj {
                id: 70,
                name: "to-classify".into(),
                owner: Some(2),
                matching_algorithm: 0,
            },
        );
        s.documents.get_mut(&4).unwrap().tags = vec![70];
        // Already processed: must be left alone even though it carries the selection tag.
        s.documents.get_mut(&5).unwrap().tags = vec![70, AI_PROCESSED];
    });
    let server = serve_with(
        &fake,
        &[
            ("SCAN_INTERVAL", "1"),
            ("PROCESS_PREDEFINED_DOCUMENTS", "yes"),
            ("TAGS", "To-Classify"),
        ],
    );
    wait_until("document 4 marked", Duration::from_secs(180), || {
        doc(&fake, 4).tags.contains(&AI_PROCESSED)
    });
    std::thread::sleep(Duration::from_secs(3));
    let d4 = doc(&fake, 4);
    assert!(d4.tags.contains(&70), "the selection tag stays");
    assert!(!d4.tags.contains(&70) || d4.tags.len() >= 2);
    for id in [1, 2, 3, 5] {
        let touched = fake.with(|s| {
            s.requests
                .iter()
                .any(|r| r.method == "PATCH" && r.path == format!("/api/documents/{id}/"))
        });
        assert!(!touched, "document {id} is not selected or already done");
    }
    let log = server.log();
    assert_eq!(log.matches("paperless document done").count(), 1, "{log}");
}

#[test]
fn cli_classifies_a_document_by_id_and_post_consume_script_queues() {
    let _serial = common::serial();
    let fake = FakePaperless::start();
    let models = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(models.path().join("cache")).unwrap();
    std::os::unix::fs::symlink(
        common::test_model_path(),
        models.path().join("cache").join(common::TEST_MODEL_FILE),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(["classify", "--document-id", "2", "--dry-run"])
        .args(["--device", "cpu", "--threads", "2"])
        .env("CANDLELIGHT_MODELS_DIR", models.path())
        .env("CANDLELIGHT_DATA_DIR", models.path().join("data"))
        .env("PAPERLESS_URL", &fake.url)
        .env("PAPERLESS_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    let report = common::json_stdout(&out);
    assert_eq!(report["document_id"], 2);
    assert_eq!(report["outcome"], "dry_run");
    assert_eq!(writes(&fake), 0);

    // Without a token the CLI says what to set.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(["classify", "--document-id", "2"])
        .env("PAPERLESS_URL", &fake.url)
        .env_remove("PAPERLESS_API_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAPERLESS_API_TOKEN"));

    // The post-consume script enqueues through the webhook endpoint and never fails the
    // consumption, even when candlelight is unreachable.
    let server = serve_with(&fake, &[]);
    let script = common::repo_root().join("deploy/paperless/post-consume.sh");
    let run = |url: &str| {
        std::process::Command::new("sh")
            .arg(&script)
            .env("DOCUMENT_ID", "2")
            .env("CANDLELIGHT_URL", url)
            .output()
            .unwrap()
    };
    let out = run(&server.url);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("HTTP 202"), "{said}");
    wait_until("document 2 marked", Duration::from_secs(180), || {
        doc(&fake, 2).tags.contains(&AI_PROCESSED)
    });
    drop(server);
    let out = run("http://127.0.0.1:9");
    assert!(
        out.status.success(),
        "a down candlelight must not fail consumption"
    );
}

#[test]
fn a_five_thousand_tag_instance_still_classifies_within_the_context() {
    let _serial = common::serial();
    let mut state = State::seeded();
    for i in 0..5000 {
        let id = 10_000 + i;
        state
            .tags
            .insert(id, Obj::new(id, &format!("Sammelordner Projekt {i:04}")));
    }
    for i in 0..2000 {
        let id = 20_000 + i;
        state
            .correspondents
            .insert(id, Obj::new(id, &format!("Handelshaus Nummer {i:04} GmbH")));
    }
    let fake = FakePaperless::start_with(state);
    let server = serve_with(&fake, &[]);
    let (status, report) = post(
        &format!("{}/api/classify", server.url),
        &json!({"document_id": 1}),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["outcome"], "applied", "{report}");
    // Thousands of tags the cues cannot judge are left to the model: its prompt still fits.
    let tokens = report["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > 0 && tokens <= 2048, "{tokens} prompt tokens");
    assert!(doc(&fake, 1).tags.contains(&AI_PROCESSED));
    assert_eq!(doc(&fake, 1).correspondent, Some(ACME), "{report}");
}

fn tag_id(fake: &FakePaperless, name: &str) -> Option<i64> {
    fake.with(|s| s.tags.values().find(|t| t.name == name).map(|t| t.id))
}

#[test]
fn documents_that_cannot_be_classified_get_the_failure_tag_once() {
    let _serial = common::serial();
    let mut state = State::seeded();
    for d in state.documents.values_mut() {
        d.tags.push(AI_PROCESSED);
    }
    state
        .documents
        .insert(50, Doc::new(50, "blank_scan", "  \n "));
    let fake = FakePaperless::start_with(state);
    let server = serve_with(&fake, &[("SCAN_INTERVAL", "1s")]);
    wait_until(
        "document 50 tagged ai-failed",
        Duration::from_secs(60),
        || tag_id(&fake, "ai-failed").is_some_and(|t| doc(&fake, 50).tags.contains(&t)),
    );
    let failed = tag_id(&fake, "ai-failed").unwrap();
    assert_eq!(
        fake.with(|s| s.tags[&failed].matching_algorithm),
        0,
        "Paperless must never assign the failure tag by itself"
    );
    // Polling leaves it alone from now on: no second attempt, no second tag write.
    let fetches = || fake.with(|s| s.count("GET", "/api/documents/50/"));
    let before = fetches();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(fetches(), before, "a failed document was tried again");
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("candlelight_paperless_given_up_total{kind=\"no_text\"} 1"),
        "{metrics}"
    );
    assert!(server.log().contains("giving up on this document"));
    // Someone fixes the document and removes the tag: the next poll classifies it.
    fake.with(|s| {
        let d = s.documents.get_mut(&50).unwrap();
        d.content = "Rechnung Nr. 77 vom 03.04.2024, Acme Corporation, Betrag 12,00 EUR".into();
        d.tags.retain(|t| *t != failed);
    });
    wait_until("document 50 classified", Duration::from_secs(120), || {
        doc(&fake, 50).tags.contains(&AI_PROCESSED)
    });
    assert!(!doc(&fake, 50).tags.contains(&failed));
}

#[test]
fn a_context_too_small_for_the_instructions_fails_once_with_the_reason() {
    let _serial = common::serial();
    // A letter no evidence can type: the model has to be asked, and its prompt cannot fit.
    let mut state = State::seeded();
    state.documents.insert(
        60,
        Doc::new(
            60,
            "letter",
            "Liebe Nachbarn, am Samstag feiern wir unser Hoffest im Garten hinter dem Haus. \
             Bringt gern Salate und Kuchen mit, Getränke sind da. Wir freuen uns auf euch!",
        ),
    );
    let fake = FakePaperless::start_with(state);
    let server = serve_with(&fake, &[("CANDLELIGHT_CLASSIFY_CTX", "200")]);
    let (status, body) = post(
        &format!("{}/api/paperless/webhook", server.url),
        &json!({"document_id": 60}),
    );
    assert_eq!(status, 202, "{body}");
    wait_until(
        "document 60 tagged ai-failed",
        Duration::from_secs(60),
        || tag_id(&fake, "ai-failed").is_some_and(|t| doc(&fake, 60).tags.contains(&t)),
    );
    let log = server.log();
    assert_eq!(
        log.matches("giving up on this document").count(),
        1,
        "{log}"
    );
    assert!(log.contains("does_not_fit"), "{log}");
    assert!(!doc(&fake, 60).tags.contains(&AI_PROCESSED));
}
