//! Proves the fake Paperless server (tests/fake_paperless) answers like the real recorded
//! exchanges in shared/paperless-fixtures: each fixture's request is replayed against the fake
//! and its status, key headers and body compared.

mod fake_paperless;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use fake_paperless::{fixtures_dir, FakePaperless, Fault, State, TOKEN};
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    /// Parsed JSON, or the text as a JSON string.
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn send(
    fake: &FakePaperless,
    method: &str,
    path: &str,
    auth: Option<&str>,
    accept: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client().request(method, format!("{}{path}", fake.url));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().expect("request to the fake");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

/// The usual authenticated call.
fn api(fake: &FakePaperless, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let token = format!("Token {TOKEN}");
    send(
        fake,
        method,
        path,
        Some(&token),
        Some("application/json; version=9"),
        body,
    )
}

/// Sends the fixture's own request (method, URL, Accept, Authorization with the token swapped
/// in, JSON body) to the fake.
fn replay(fake: &FakePaperless, name: &str) -> (Value, Answer) {
    let fx = fixture(name);
    let rq = &fx["request"];
    let auth = rq["headers"]["authorization"]
        .as_str()
        .map(|a| a.replace("<token>", TOKEN));
    let body = Some(&rq["body"]).filter(|b| !b.is_null());
    let answer = send(
        fake,
        rq["method"].as_str().unwrap(),
        rq["url"].as_str().unwrap(),
        auth.as_deref(),
        rq["headers"]["accept"].as_str(),
        body,
    );
    (fx, answer)
}

fn without(v: &Value, ignore: &[&str]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !ignore.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Replays `name` and checks status, version/auth/redirect headers and the body (minus the
/// top-level keys in `ignore`; `["*"]` skips the body). Returns the fake's answer.
fn check(fake: &FakePaperless, name: &str, ignore: &[&str]) -> Answer {
    let (fx, got) = replay(fake, name);
    let want = &fx["response"];
    assert_eq!(
        got.status,
        want["status"].as_u64().unwrap() as u16,
        "{name}: status, body {}",
        got.body
    );
    for h in [
        "x-api-version",
        "x-version",
        "www-authenticate",
        "location",
        "content-type",
    ] {
        assert_eq!(
            got.header(h),
            want["headers"][h].as_str(),
            "{name}: header {h}"
        );
    }
    if ignore != ["*"] {
        assert_eq!(
            without(&got.body, ignore),
            without(&want["body"], ignore),
            "{name}: body"
        );
    }
    got
}

fn ids(list: &Value) -> Vec<i64> {
    list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect()
}

/// The fixture's link with the recorded host swapped for the fake's.
fn link(fake: &FakePaperless, fixture_link: &Value) -> Value {
    match fixture_link.as_str() {
        Some(l) => json!(l.replace("http://127.0.0.1:8000", &fake.url)),
        None => Value::Null,
    }
}

#[test]
fn auth_and_version_failures_match_fixtures() {
    let fake = FakePaperless::start();
    for name in [
        "documents_list_bad_token",
        "documents_list_no_auth",
        "documents_list_bearer_scheme",
        "tags_list_bad_token",
        "version_header_unauthenticated",
        "version_header_unsupported",
        "version_header_old_unsupported",
    ] {
        check(&fake, name, &[]);
    }
    for name in [
        "version_header_v9",
        "version_header_v10",
        "version_header_none",
    ] {
        check(&fake, name, &["*"]);
    }
    // The scheme word is case-insensitive.
    let token = format!("token {TOKEN}");
    assert_eq!(
        send(&fake, "GET", "/api/tags/", Some(&token), None, None).status,
        200
    );
}

#[test]
fn urls_without_trailing_slash_and_api_root_match_fixtures() {
    let fake = FakePaperless::start();
    check(&fake, "api_root", &[]);
    check(&fake, "api_root_no_auth", &[]);
    check(&fake, "documents_list_no_trailing_slash", &[]);
    let got = check(&fake, "documents_patch_no_trailing_slash", &["*"]);
    assert!(got
        .body
        .as_str()
        .unwrap()
        .contains("CSRF verification failed"));
    assert_eq!(
        fake.with(|s| s.documents[&3].title.clone()),
        "bank-statement-2024-04"
    );
}

#[test]
fn documents_get_and_patch_match_fixtures() {
    let fake = FakePaperless::start();
    // Doc 6 (a duplicate of doc 1) is not seeded.
    check(&fake, "documents_get", &["duplicate_documents"]);
    check(&fake, "documents_get_404", &[]);
    check(&fake, "documents_patch_404", &[]);
    for name in [
        "documents_patch_bad_tag",
        "documents_patch_bad_correspondent",
        "documents_patch_bad_created",
        "documents_patch_tags_as_names",
        "documents_patch_title_too_long",
    ] {
        check(&fake, name, &[]);
    }
    let before = fake.with(|s| s.documents[&1].modified.clone());
    let got = check(&fake, "documents_patch", &["modified"]);
    assert_ne!(got.body["modified"], json!(before));
    let doc = api(&fake, "GET", "/api/documents/1/", None).body;
    assert_eq!(
        (doc["tags"].clone(), doc["correspondent"].clone()),
        (json!([1, 2]), json!(1))
    );

    // All or nothing: one bad field and nothing changes.
    let bad = api(
        &fake,
        "PATCH",
        "/api/documents/1/",
        Some(&json!({"title": "new", "tags": [99999]})),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(
        fake.with(|s| s.documents[&1].title.clone()),
        "Acme Corporation Invoice INV-2024-0387"
    );
    // tags replaces the list; created takes a date; null clears.
    let patch = json!({"tags": [8], "created": "2024-06-03", "correspondent": null});
    let doc = api(&fake, "PATCH", "/api/documents/1/", Some(&patch)).body;
    assert_eq!(
        (
            doc["tags"].clone(),
            doc["created"].clone(),
            doc["correspondent"].clone()
        ),
        (json!([8]), json!("2024-06-03"), Value::Null)
    );
    assert_eq!(
        api(
            &fake,
            "PATCH",
            "/api/documents/1/",
            Some(&json!({"title": ""}))
        )
        .status,
        200
    );
}

#[test]
fn lists_paginate_like_fixtures() {
    let fake = FakePaperless::start();
    // Fixture order 4,2,3,6,1,5 without the unseeded doc 6.
    assert_eq!(
        ids(&api(&fake, "GET", "/api/documents/", None).body),
        [4, 2, 3, 1, 5]
    );
    for name in [
        "documents_list_page_size_2",
        "documents_list_page_2",
        "documents_list_page_last",
        "documents_list_fields",
        "documents_list_v9",
        "tags_list_page_size_2",
    ] {
        let want = fixture(name)["response"]["body"].clone();
        let got = check(&fake, name, &["*"]).body;
        assert_eq!(got["next"], link(&fake, &want["next"]), "{name}: next");
        assert_eq!(
            got["previous"],
            link(&fake, &want["previous"]),
            "{name}: previous"
        );
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&got), keys(&want), "{name}: keys");
        assert_eq!(
            keys(&got["results"][0]),
            keys(&want["results"][0]),
            "{name}: item keys"
        );
    }
    check(&fake, "documents_list_page_out_of_range", &[]);
    let v9 = api(&fake, "GET", "/api/documents/?page_size=2", None).body;
    assert_eq!(v9["all"], json!([4, 2, 3, 1, 5]));
    let fields = check(&fake, "documents_list_fields", &["*"]).body;
    assert_eq!(
        fields["results"][0]["content"],
        fake.with(|s| json!(s.documents[&4].content))
    );
}

#[test]
fn objects_list_filter_and_create_like_fixtures() {
    let fake = FakePaperless::start();
    let want = fixture("tags_list")["response"]["body"].clone();
    let got = check(&fake, "tags_list", &["*"]).body;
    let names = |v: &Value| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&got), names(&want));
    assert_eq!(got["display_count"], json!(7));
    check(&fake, "tags_filter_name_iexact", &[]);
    for name in [
        "correspondents_filter_name_iexact",
        "document_types_filter_name_iexact",
    ] {
        let got = check(&fake, name, &["results"]).body;
        assert_eq!(
            without(&got["results"][0], &["document_count"]),
            without(
                &fixture(name)["response"]["body"]["results"][0],
                &["document_count"]
            )
        );
    }
    for name in [
        "tags_create_duplicate",
        "correspondents_create_duplicate",
        "document_types_create_duplicate",
        "tags_create_missing_name",
        "tags_create_name_too_long",
    ] {
        check(&fake, name, &[]);
    }
    for name in [
        "tags_create_duplicate_other_case",
        "correspondents_create_duplicate_other_case",
        "document_types_create_duplicate_other_case",
    ] {
        check(&fake, name, &["id"]);
    }
    // Unique per (name, owner): a shared "Finance" may sit next to admin's, once.
    let shared = json!({"name": "Finance", "owner": null});
    let created = api(&fake, "POST", "/api/tags/", Some(&shared));
    assert_eq!(
        (created.status, created.body["owner"].clone()),
        (201, Value::Null)
    );
    assert_eq!(api(&fake, "POST", "/api/tags/", Some(&shared)).status, 400);
    let id = created.body["id"].as_i64().unwrap();
    assert_eq!(
        api(&fake, "DELETE", &format!("/api/tags/{id}/"), None).status,
        204
    );

    let empty = FakePaperless::start_with(State::empty());
    for name in [
        "tags_create",
        "tags_create_full",
        "correspondents_create",
        "document_types_create",
    ] {
        check(&empty, name, &["id"]);
    }
}

#[test]
fn bulk_edit_and_filters_match_fixtures() {
    let fake = FakePaperless::start();
    check(&fake, "bulk_edit_add_tag", &[]);
    check(&fake, "bulk_edit_modify_tags", &[]);
    for name in [
        "bulk_edit_bad_tag",
        "bulk_edit_bad_method",
        "bulk_edit_missing_document",
    ] {
        check(&fake, name, &[]);
    }
    assert_eq!(fake.with(|s| s.documents[&5].tags.clone()), [6]);
    assert_eq!(
        ids(&api(&fake, "GET", "/api/documents/?tags__id__all=2", None).body),
        [4, 3]
    );
    assert_eq!(
        ids(&api(&fake, "GET", "/api/documents/?tags__id__none=2%2C6", None).body),
        [2, 1]
    );
    assert_eq!(
        ids(&api(&fake, "GET", "/api/documents/?is_tagged=false", None).body),
        [2, 1]
    );
    assert_eq!(
        ids(&api(&fake, "GET", "/api/documents/?title__icontains=BANK", None).body),
        [3]
    );
    assert_eq!(
        ids(&api(
            &fake,
            "GET",
            "/api/documents/?fields=id&ordering=added",
            None
        )
        .body),
        [1, 2, 3, 4, 5]
    );
}

#[test]
fn faults_outage_races_and_recording() {
    let fake = FakePaperless::start();
    fake.with(|s| {
        s.faults.push(Fault {
            method: "GET".into(),
            path_prefix: "/api/tags/".into(),
            status: 500,
            times: 2,
        });
        s.stale_lookups.push("Finance".into());
    });
    // Faults answer before authentication.
    let first = send(&fake, "GET", "/api/tags/", None, None, None);
    assert_eq!(
        (first.status, first.body.clone()),
        (500, json!("<h1>Server Error (500)</h1>"))
    );
    assert_eq!(api(&fake, "GET", "/api/tags/", None).status, 500);
    assert_eq!(
        api(&fake, "GET", "/api/tags/?name__iexact=finance", None).body["count"],
        json!(0)
    );
    assert_eq!(
        api(&fake, "GET", "/api/tags/?name__iexact=finance", None).body["count"],
        json!(1)
    );
    fake.with(|s| s.down = true);
    let down = api(&fake, "GET", "/api/documents/", None);
    assert_eq!(
        (down.status, down.body),
        (503, json!("Service Unavailable"))
    );
    fake.with(|s| {
        assert_eq!(s.count("GET", "/api/tags/"), 4);
        assert_eq!(s.count("*", "/api/"), 5);
        assert_eq!(s.requests[2].query, "name__iexact=finance");
        assert_eq!(
            s.requests.iter().map(|r| r.status).collect::<Vec<_>>(),
            [500, 500, 200, 200, 503]
        );
    });
    let url = fake.url.clone();
    drop(fake);
    assert!(
        client().get(format!("{url}/api/")).send().is_err(),
        "stopped on drop"
    );
}

/// A one-shot-per-connection HTTP listener that hands each request body to the test.
fn webhook_receiver() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx
                .send(serde_json::from_slice(&body).unwrap_or(Value::Null))
                .is_err()
            {
                break;
            }
        }
    });
    (url, rx)
}

#[test]
fn webhooks_fire_on_patch_and_bulk_edit_unless_filtered() {
    let fake = FakePaperless::start();
    let (hook, rx) = webhook_receiver();
    fake.with(|s| {
        s.webhook_url = Some(hook);
        s.webhook_filter_has_not_tags = vec![2];
    });
    assert_eq!(
        api(
            &fake,
            "PATCH",
            "/api/documents/3/",
            Some(&json!({"title": "Bank"}))
        )
        .status,
        200
    );
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("webhook after PATCH");
    assert_eq!(
        got,
        json!({"document_id": "3", "doc_url": format!("{}/documents/3/", fake.url), "title": "Bank"})
    );
    let bulk = json!({"documents": [4], "method": "set_document_type", "parameters": {"document_type": 4}});
    assert_eq!(
        api(&fake, "POST", "/api/documents/bulk_edit/", Some(&bulk)).status,
        200
    );
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("webhook after bulk_edit");
    assert_eq!(got["document_id"], json!("4"));
    // The document now carries the filtered tag: no webhook (the classifier's loop guard).
    assert_eq!(
        api(
            &fake,
            "PATCH",
            "/api/documents/5/",
            Some(&json!({"tags": [2]}))
        )
        .status,
        200
    );
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(fake.with(|s| s.webhooks_sent), 2);
}
