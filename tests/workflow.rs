//! The user's story against the real Paperless-ngx (../shared/paperless-ngx, started by the
//! test): a "Document Added" workflow with a webhook action, created through Paperless's API,
//! points at candlelight; documents uploaded at once are each classified and written back;
//! candlelight restarted mid-queue loses none of them (polling finds what the lost queue held);
//! and Paperless's own history shows each of our changes made once per document.

mod common;
mod real_paperless;

use std::time::Duration;

use common::{wait_until, Server};
use real_paperless::RealPaperless;
use serde_json::{json, Value};

/// Deletes the workflow when the test ends, however it ends: the instance is shared.
struct Workflow<'a>(&'a RealPaperless, i64);

impl Drop for Workflow<'_> {
    fn drop(&mut self) {
        self.0.delete(&format!("/api/workflows/{}/", self.1));
    }
}

fn serve(pl: &RealPaperless, data: &std::path::Path, host: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("PAPERLESS_URL", pl.url.as_str()),
        ("PAPERLESS_API_TOKEN", pl.token.as_str()),
        ("CANDLELIGHT_DATA_DIR", data.to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    Server::start_with_env(&["--host", host], &all)
}

/// Real Paperless consumes a document every few seconds: minutes, not seconds.
const PATIENCE: Duration = Duration::from_secs(240);

#[test]
fn a_document_added_workflow_classifies_every_upload_once_even_across_a_restart() {
    let _one = common::serial();
    let pl = RealPaperless::start();
    let run = real_paperless::run_id();
    // This run's own inbox tag selects what polling sees (the instance keeps earlier runs'
    // documents).
    let inbox_name = format!("Eingang {run}");
    let inbox = pl.object("tags", &inbox_name);
    let only_inbox = [
        ("PROCESS_PREDEFINED_DOCUMENTS", "yes"),
        ("TAGS", inbox_name.as_str()),
    ];

    let data = tempfile::tempdir().unwrap();
    let s = serve(
        &pl,
        data.path(),
        "127.0.0.1:0",
        &[&only_inbox[..], &[("SCAN_INTERVAL", "0")]].concat(),
    );
    let host = s.url.trim_start_matches("http://").to_owned();
    let flow = pl.post(
        "/api/workflows/",
        json!({
            "name": format!("candlelight {run}"),
            "order": 0,
            "enabled": true,
            "triggers": [{"type": 2, "sources": [1, 2, 3, 4],
                          "filter_filename": format!("wf{run}*")}],
            "actions": [{"type": 4, "webhook": {
                "url": format!("{}/api/paperless/webhook", s.url),
                // As the README tells users to set it up.
                "use_params": true, "as_json": true,
                "params": {"document_id": "{{ doc_id }}"},
                "headers": {}, "include_document": false}}],
        }),
    );
    let _flow = Workflow(&pl, flow["id"].as_i64().unwrap());

    // Four documents at once, as a scanner's batch would arrive.
    let titles: Vec<String> = (0..4).map(|i| format!("wf{run}-{i}")).collect();
    for (i, t) in titles.iter().enumerate() {
        pl.submit(
            t,
            &format!(
                "Stadtwerke Beispielstadt GmbH\nAbrechnung Strom {i}\nKundennummer K{run}\n\
                 Rechnungsdatum: 1{i}.02.2025\nVerbrauch 1.2{i}0 kWh, Gesamtbetrag 3{i}4,10 EUR."
            ),
            &[inbox],
        );
    }
    let ids: Vec<i64> = titles.iter().map(|t| pl.consumed(t)).collect();
    let marked = |id: i64| pl.has_tag(id, "ai-processed");

    // The webhook brought the first one in; candlelight then stops with the rest queued or
    // not yet consumed, and comes back on the same address with polling on.
    wait_until(
        "the workflow's webhook to get a document classified",
        PATIENCE,
        || ids.iter().any(|&id| marked(id)),
    );
    drop(s);
    let s = serve(
        &pl,
        data.path(),
        &host,
        &[&only_inbox[..], &[("SCAN_INTERVAL", "2s")]].concat(),
    );
    wait_until("every uploaded document classified", PATIENCE, || {
        ids.iter().all(|&id| marked(id))
    });
    // Polling and late webhooks have a few more rounds to do something twice.
    std::thread::sleep(Duration::from_secs(6));
    drop(s);

    let marker = pl.object("tags", "ai-processed");
    for (&id, title) in ids.iter().zip(&titles) {
        let doc = pl.get(&format!("/api/documents/{id}/"));
        assert_ne!(doc["title"], title.as_str(), "our title was written: {doc}");
        // Paperless's audit log (newest first): our changes carry the token's user as actor,
        // Paperless's own at consumption none. Our title written once, the marker added once.
        let history = pl.get(&format!("/api/documents/{id}/history/"));
        let ours: Vec<&Value> = history
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "update" && !e["actor"].is_null())
            .collect();
        let title_writes = ours
            .iter()
            .filter(|e| e["changes"].get("title").is_some())
            .count();
        assert_eq!(title_writes, 1, "document {id}: {history:#}");
        // A tag change is logged as [before, after] id lists.
        let has_marker = |v: &Value| v.as_array().is_some_and(|l| l.contains(&json!(marker)));
        let marker_adds = ours
            .iter()
            .filter(|e| {
                let t = &e["changes"]["tags"];
                !has_marker(&t[0]) && has_marker(&t[1])
            })
            .count();
        assert_eq!(marker_adds, 1, "document {id}: {history:#}");
    }
}

#[test]
fn a_title_the_user_gives_while_the_model_runs_is_kept() {
    let _one = common::serial();
    let pl = RealPaperless::start();
    let run = real_paperless::run_id();
    // A long letter no evidence can type: the model is asked, and its prefill takes seconds.
    let paragraph = "Liebe Nachbarinnen und Nachbarn, wie in jedem Sommer wollen wir auch dieses \
        Jahr gemeinsam feiern. Wer Lust hat, bringt etwas zu essen mit, für Getränke ist gesorgt. \
        Kinder sind herzlich willkommen, und wer ein Instrument spielt, darf es gern mitbringen. ";
    let id = pl.upload(&format!("brief-{run}"), &paragraph.repeat(30));
    let jo = pl.user(&format!("jo{run}"));
    pl.patch(&format!("/api/documents/{id}/"), json!({"owner": jo}));

    let data = tempfile::tempdir().unwrap();
    let s = pl.serve(data.path(), &[]);
    let url = s.url.clone();
    let classify = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(format!("{url}/api/classify"))
            .json(&json!({"document_id": id}))
            .timeout(Duration::from_secs(300))
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    });
    // The user renames the document while the model reads it.
    std::thread::sleep(Duration::from_millis(800));
    let users = format!("Einladung Sommerfest {run}");
    pl.patch(&format!("/api/documents/{id}/"), json!({"title": users}));
    let report = classify.join().unwrap();
    assert!(report["prompt_tokens"].as_u64().unwrap() > 500, "{report}");
    assert_eq!(
        pl.get(&format!("/api/documents/{id}/"))["title"],
        users.as_str()
    );
    // Kept by us (the document is read again right before writing), not merely overwritten
    // by the user's later edit.
    assert!(
        report["applied"]["kept"].to_string().contains("title"),
        "{report}"
    );
}

#[test]
fn a_document_is_offered_only_names_its_owner_may_see_and_what_we_create_is_the_owners() {
    let _one = common::serial();
    let pl = RealPaperless::start();
    let run = real_paperless::run_id();
    let ann = pl.user(&format!("ann{run}"));
    let ben = pl.user(&format!("ben{run}"));
    // Ann's own correspondent: a name only she (and admins) may see.
    let private = format!("Praxis Dr. Quastenberg {run}");
    let anns = pl.post(
        "/api/correspondents/",
        json!({"name": private, "owner": ann, "matching_algorithm": 0}),
    )["id"]
        .as_i64()
        .unwrap();
    let letter = |who: &str| {
        format!(
            "{private}\nPrivatrechnung für {who}\nRechnungsdatum: 03.03.2025\n\
             Behandlung am 01.03.2025, Betrag 80,00 EUR."
        )
    };
    let a = pl.upload(&format!("own-a-{run}"), &letter("Ann"));
    let b = pl.upload(&format!("own-b-{run}"), &letter("Ben"));
    pl.patch(&format!("/api/documents/{a}/"), json!({"owner": ann}));
    pl.patch(&format!("/api/documents/{b}/"), json!({"owner": ben}));

    let data = tempfile::tempdir().unwrap();
    let s = pl.serve(data.path(), &[]);
    let (st, ra) = s.post("/api/classify", json!({"document_id": a}));
    assert_eq!(st, 200, "{ra}");
    assert_eq!(ra["suggestion"]["correspondent"], private.as_str(), "{ra}");
    assert_eq!(
        pl.get(&format!("/api/documents/{a}/"))["correspondent"],
        json!(anns)
    );
    // Ben's letter names the same practice, but Ann's entry is not his to see: it is neither
    // offered to the classifier nor written.
    let (st, rb) = s.post("/api/classify", json!({"document_id": b}));
    assert_eq!(st, 200, "{rb}");
    assert_eq!(rb["suggestion"]["correspondent"], Value::Null, "{rb}");
    assert_eq!(
        pl.get(&format!("/api/documents/{b}/"))["correspondent"],
        Value::Null
    );
    drop(s);

    // A correspondent we create for Ben's document is Ben's, and shared as the document is
    // (CANDLELIGHT_CREATED_OWNER=document): Ben lets Ann see this document.
    pl.patch(
        &format!("/api/documents/{b}/"),
        json!({"set_permissions": {"view": {"users": [ann], "groups": []},
                                   "change": {"users": [], "groups": []}}}),
    );
    use candlelight::paperless::apply::{apply, Policy};
    use candlelight::paperless::{PaperlessClient, Suggestion};
    let client = PaperlessClient::new(&pl.url, &pl.token).unwrap();
    let policy = Policy {
        create_correspondents: true,
        created_owned_by_document_owner: true,
        ..Policy::default()
    };
    let coined = format!("Zahnarztpraxis Wendelin {run}");
    let suggestion = Suggestion {
        title: format!("Rechnung {run}"),
        correspondent: Some(coined.clone()),
        document_type: None,
        tags: vec![],
        created: None,
        ..Suggestion::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let applied = rt
        .block_on(async {
            let doc = client.document(b).await?;
            let taxonomy = client.taxonomy().await?;
            apply(&client, &doc, &suggestion, &taxonomy, &policy, false).await
        })
        .unwrap();
    assert_eq!(applied.created_objects.len(), 1, "{applied:?}");
    let now = pl.get(&format!("/api/documents/{b}/"));
    let created = pl.get(&format!(
        "/api/correspondents/{}/?full_perms=true",
        now["correspondent"]
    ));
    assert_eq!(created["name"], coined.as_str());
    assert_eq!(created["owner"], json!(ben), "{created}");
    assert_eq!(
        created["permissions"]["view"]["users"],
        json!([ann]),
        "{created}"
    );
}

#[test]
fn paperless_runs_the_post_consume_script_and_the_document_is_classified() {
    let _one = common::serial();
    // Paperless reads its post-consume script and the script's CANDLELIGHT_URL at start: a
    // private instance, configured for this candlelight's address.
    let host = format!("127.0.0.1:{}", real_paperless::free_port());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/paperless/post-consume.sh");
    let (pl, _instance) = RealPaperless::start_private(
        "postconsume",
        &format!(
            "PAPERLESS_POST_CONSUME_SCRIPT={}\nCANDLELIGHT_URL=http://{host}\n",
            script.display()
        ),
    );
    let data = tempfile::tempdir().unwrap();
    let s = serve(&pl, data.path(), &host, &[("SCAN_INTERVAL", "0")]);
    let run = real_paperless::run_id();
    let id = pl.upload(
        &format!("pc-{run}"),
        "Stadtwerke Beispielstadt GmbH\nStromrechnung\nRechnungsdatum: 14.02.2025\n\
         Verbrauch 1.240 kWh, Gesamtbetrag 344,10 EUR.",
    );
    // Polling is off and no workflow exists: only the script can have brought it in.
    wait_until(
        "the post-consume script's document classified",
        PATIENCE,
        || pl.has_tag(id, "ai-processed"),
    );
    // The trigger is logged with the outcome, after the tags are written: wait for the line
    // rather than read the log at the instant the tag appears (that raced).
    wait_until("the webhook trigger in the log", PATIENCE, || {
        let log = s.log();
        log.contains("trigger=\"webhook\"") || log.contains("trigger=webhook")
    });
    let log = s.log();
    assert!(
        !log.contains("trigger=\"poll\"") && !log.contains("trigger=poll"),
        "{log}"
    );
    let doc = pl.get(&format!("/api/documents/{id}/"));
    assert_ne!(
        doc["title"],
        format!("pc-{run}").as_str(),
        "our title: {doc}"
    );
}

#[test]
fn a_document_queued_while_paperless_is_down_is_finished_once_it_is_back() {
    let _one = common::serial();
    let (pl, instance) = RealPaperless::start_private("outage", "");
    let run = real_paperless::run_id();
    let title = format!("outage-{run}");
    let id = pl.upload(
        &title,
        "Stadtwerke Beispielstadt GmbH\nStromrechnung\nRechnungsdatum: 14.02.2025\n\
         Verbrauch 1.240 kWh, Gesamtbetrag 344,10 EUR.",
    );
    let data = tempfile::tempdir().unwrap();
    let s = serve(
        &pl,
        data.path(),
        "127.0.0.1:0",
        &[("SCAN_INTERVAL", "2s"), ("CANDLELIGHT_MAX_ATTEMPTS", "2")],
    );
    // Paperless goes down, and the webhook for the new document arrives meanwhile.
    instance.stop();
    let (st, body) = s.post("/api/paperless/webhook", json!({"document_id": id}));
    assert_eq!(st, 202, "{body}");
    std::thread::sleep(Duration::from_secs(8));
    instance.restart();
    // Nothing was lost: the queue's retries or polling finish it once Paperless is back, and
    // it was written once, not half.
    wait_until("the document classified after the outage", PATIENCE, || {
        pl.has_tag(id, "ai-processed")
    });
    std::thread::sleep(Duration::from_secs(4));
    let doc = pl.get(&format!("/api/documents/{id}/"));
    assert_ne!(doc["title"], title.as_str(), "{doc}");
    let tags = pl.tag_names(&doc);
    assert!(!tags.contains(&"ai-failed".to_owned()), "{tags:?}");
    let history = pl.get(&format!("/api/documents/{id}/history/"));
    let title_writes = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "update" && !e["actor"].is_null())
        .filter(|e| e["changes"].get("title").is_some())
        .count();
    assert_eq!(title_writes, 1, "{history:#}");
    drop(instance);
}
