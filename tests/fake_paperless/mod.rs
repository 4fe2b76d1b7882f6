//! A fake Paperless-ngx 3.0.5 REST server for the integration tests. It answers like the real
//! exchanges recorded in `shared/paperless-fixtures/` (see that README for the semantics) and
//! adds knobs real servers only show on bad days: injected faults, an outage, a lookup race,
//! and "Document Updated" webhooks.
//!
//! It runs on 127.0.0.1 (random port) in its own thread with its own tokio runtime, so the
//! (synchronous) tests can talk to it with any client. All state sits behind one mutex; a
//! request is answered completely under that lock, which keeps `requests` in arrival order.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State as Shared;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

mod lists;
mod writes;

use lists::{doc_json, list_documents, list_objects, obj_json, quote, Shape};
use writes::{bulk_edit, create_object, delete_object, patch_document};

pub const TOKEN: &str = "test-token";
/// Every authenticated answer advertises the newest API version, whatever was asked for.
const API_VERSION: &str = "10";
const SERVER_VERSION: &str = "3.0.5";
/// The user behind `TOKEN` ("admin" = user 2 in the recording).
const USER: i64 = 2;
const NAME_MAX: usize = 128;
const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const NOT_PROVIDED: &str = "Authentication credentials were not provided.";
const NO_DOCUMENT: &str = "No Document matches the given query.";
/// Django's CSRF failure page (shortened): what a write without the trailing slash gets.
const CSRF_PAGE: &str =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><title>403 Forbidden</title></head>\n\
<body>\n<div id=\"summary\">\n  <h1>Forbidden <span>(403)</span></h1>\n  \
<p>CSRF verification failed. Request aborted.</p>\n</div>\n</body>\n</html>\n";

#[derive(Clone, Debug)]
pub struct Obj {
    pub id: i64,
    pub name: String,
    pub owner: Option<i64>,
    pub matching_algorithm: i64,
}

#[derive(Clone, Debug)]
pub struct Doc {
    pub id: i64,
    pub title: String,
    pub content: String,
    pub tags: Vec<i64>,
    pub correspondent: Option<i64>,
    pub document_type: Option<i64>,
    /// `YYYY-MM-DD`
    pub created: String,
    pub original_file_name: String,
    pub owner: Option<i64>,
    pub added: String,
    pub modified: String,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// `Null` when there was no body or it was not JSON.
    pub body: Value,
    pub status: u16,
}

/// An injected failure: requests matching `method` ("*" = any) and `path_prefix` get `status`
/// `times` times, then the fault is gone.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: String,
    pub path_prefix: String,
    pub status: u16,
    pub times: usize,
}

pub struct State {
    pub tags: BTreeMap<i64, Obj>,
    pub correspondents: BTreeMap<i64, Obj>,
    pub document_types: BTreeMap<i64, Obj>,
    pub documents: BTreeMap<i64, Doc>,
    /// Next id for created objects (ids already taken anywhere are skipped).
    pub next_id: i64,
    pub requests: Vec<Recorded>,
    pub faults: Vec<Fault>,
    /// Every request gets 503 (an outage behind a proxy).
    pub down: bool,
    /// The first `name__iexact=<name>` lookup of each name finds nothing (the name is then
    /// dropped from the list): another client is creating the object at the same time.
    pub stale_lookups: Vec<String>,
    /// Where "Document Updated" webhooks go (after a successful PATCH or bulk_edit).
    pub webhook_url: Option<String>,
    /// The workflow trigger's `filter_has_not_tags`: documents with one of these get no webhook.
    pub webhook_filter_has_not_tags: Vec<i64>,
    /// Webhooks dispatched so far (counted when sent off, not when delivered).
    pub webhooks_sent: usize,
}

impl Obj {
    /// An object owned by the token's user, with Paperless's default matching ("any word").
    pub fn new(id: i64, name: &str) -> Obj {
        Obj {
            id,
            name: name.to_owned(),
            owner: Some(USER),
            matching_algorithm: 1,
        }
    }
}

impl Doc {
    /// A plain-text document with nothing assigned.
    pub fn new(id: i64, title: &str, content: &str) -> Doc {
        Doc {
            id,
            title: title.to_owned(),
            content: content.to_owned(),
            tags: Vec::new(),
            correspondent: None,
            document_type: None,
            created: "2024-01-01".into(),
            original_file_name: format!("{title}.txt"),
            owner: Some(USER),
            added: "2026-11-24T04:00:00.000000Z".into(),
            modified: "2026-11-24T04:00:00.000000Z".into(),
        }
    }
}

/// The first five documents of the recording: id, file stem, created, added, modified.
const SEED_DOCS: &str = "\
1 acme-invoice-2024-0387 2024-03-14 2026-11-24T04:03:30.947953Z 2026-11-24T04:03:31.116406Z
2 telekom-rechnung-2024-05 2024-05-01 2026-11-24T04:06:00.441749Z 2026-11-24T04:06:00.623865Z
3 bank-statement-2024-04 2024-04-01 2026-11-24T04:06:02.326906Z 2026-11-24T04:06:02.488254Z
4 insurance-policy-renewal-2024 2024-05-20 2026-11-24T04:06:07.762536Z 2026-11-24T04:06:07.959215Z
5 payslip-2024-04-northwind 2024-01-04 2026-11-24T04:06:09.443877Z 2026-11-24T04:06:09.619321Z";

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/paperless-fixtures")
}

fn objects(list: &[(i64, &str)]) -> BTreeMap<i64, Obj> {
    list.iter()
        .map(|&(id, name)| (id, Obj::new(id, name)))
        .collect()
}

impl State {
    pub fn empty() -> State {
        State {
            tags: BTreeMap::new(),
            correspondents: BTreeMap::new(),
            document_types: BTreeMap::new(),
            documents: BTreeMap::new(),
            next_id: 100,
            requests: Vec::new(),
            faults: Vec::new(),
            down: false,
            stale_lookups: Vec::new(),
            webhook_url: None,
            webhook_filter_has_not_tags: Vec::new(),
            webhooks_sent: 0,
        }
    }

    /// The vocabulary of the recorded server and its first five documents, unassigned.
    pub fn seeded() -> State {
        let mut s = State::empty();
        s.tags = objects(&[
            (1, "Finance"),
            (2, "ai-processed"),
            (4, "Telecom"),
            (5, "Insurance"),
            (6, "Payroll"),
            (7, "Banking"),
            (8, "Tax"),
        ]);
        s.tags.get_mut(&2).expect("tag 2").matching_algorithm = 0;
        s.correspondents = objects(&[
            (1, "Acme Corporation"),
            (3, "Deutsche Telekom"),
            (4, "First Springfield Bank"),
            (5, "Guardian Mutual Insurance"),
            (6, "Northwind Traders"),
        ]);
        s.document_types = objects(&[
            (1, "Invoice"),
            (3, "Bank Statement"),
            (4, "Insurance Letter"),
            (5, "Payslip"),
            (6, "Phone Bill"),
        ]);
        for line in SEED_DOCS.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let path = fixtures_dir().join(format!("documents/{}.txt", f[1]));
            let content = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("fake Paperless seed {}: {e}", path.display()));
            let id = f[0].parse().expect("seed id");
            let mut d = Doc::new(id, f[1], &content);
            (d.created, d.added, d.modified) = (f[2].into(), f[3].into(), f[4].into());
            s.documents.insert(id, d);
        }
        s
    }

    /// Recorded requests with this method ("*" = any) whose path starts with `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| method == "*" || r.method.eq_ignore_ascii_case(method))
            .filter(|r| r.path.starts_with(path_prefix))
            .count()
    }

    fn objects(&self, kind: Kind) -> &BTreeMap<i64, Obj> {
        match kind {
            Kind::Tag => &self.tags,
            Kind::Correspondent => &self.correspondents,
            Kind::DocumentType => &self.document_types,
        }
    }

    fn objects_mut(&mut self, kind: Kind) -> &mut BTreeMap<i64, Obj> {
        match kind {
            Kind::Tag => &mut self.tags,
            Kind::Correspondent => &mut self.correspondents,
            Kind::DocumentType => &mut self.document_types,
        }
    }

    fn document_count(&self, kind: Kind, id: i64) -> usize {
        let uses = |d: &&Doc| match kind {
            Kind::Tag => d.tags.contains(&id),
            Kind::Correspondent => d.correspondent == Some(id),
            Kind::DocumentType => d.document_type == Some(id),
        };
        self.documents.values().filter(uses).count()
    }

    fn take_id(&mut self) -> i64 {
        let taken = |s: &State, id| {
            s.tags.contains_key(&id)
                || s.correspondents.contains_key(&id)
                || s.document_types.contains_key(&id)
                || s.documents.contains_key(&id)
        };
        while taken(self, self.next_id) {
            self.next_id += 1;
        }
        self.next_id += 1;
        self.next_id - 1
    }

    /// The status of the first fault matching the request, used up by one.
    fn take_fault(&mut self, method: &str, path: &str) -> Option<u16> {
        self.faults.retain(|f| f.times > 0);
        let i = self.faults.iter().position(|f| {
            (f.method == "*" || f.method.eq_ignore_ascii_case(method))
                && path.starts_with(&f.path_prefix)
        })?;
        let fault = &mut self.faults[i];
        fault.times -= 1;
        let status = fault.status;
        if fault.times == 0 {
            self.faults.remove(i);
        }
        Some(status)
    }

    /// Webhook bodies for the documents a successful write touched (like Paperless's
    /// "Document Updated" webhook action with `use_params` + `as_json`: all values strings).
    fn webhooks_for(&mut self, touched: &[i64], base_url: &str) -> Vec<(String, Value)> {
        let Some(url) = self.webhook_url.clone() else {
            return Vec::new();
        };
        let filter = &self.webhook_filter_has_not_tags;
        let hooks: Vec<(String, Value)> = touched
            .iter()
            .filter_map(|id| self.documents.get(id))
            .filter(|d| !d.tags.iter().any(|t| filter.contains(t)))
            .map(|d| {
                let body = json!({
                    "document_id": d.id.to_string(),
                    "doc_url": format!("{base_url}/documents/{}/", d.id),
                    "title": d.title,
                });
                (url.clone(), body)
            })
            .collect();
        self.webhooks_sent += hooks.len();
        hooks
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Tag,
    Correspondent,
    DocumentType,
}

impl Kind {
    fn from_segment(s: &str) -> Option<Kind> {
        match s {
            "tags" => Some(Kind::Tag),
            "correspondents" => Some(Kind::Correspondent),
            "document_types" => Some(Kind::DocumentType),
            _ => None,
        }
    }

    /// Django's model name, as in "No Tag matches the given query."
    fn model(self) -> &'static str {
        match self {
            Kind::Tag => "Tag",
            Kind::Correspondent => "Correspondent",
            Kind::DocumentType => "DocumentType",
        }
    }
}

pub struct FakePaperless {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the request handler shares.
struct App {
    state: Arc<Mutex<State>>,
    base_url: String,
    http: reqwest::Client,
}

/// A test that panicked while holding the lock must not take every later request down too.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakePaperless {
    pub fn start() -> FakePaperless {
        FakePaperless::start_with(State::seeded())
    }

    pub fn start_with(state: State) -> FakePaperless {
        // Bound here, so the port is known (and accepting) before `start` returns.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(state));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("webhook client");
        let app = Arc::new(App {
            state: state.clone(),
            base_url: url.clone(),
            http,
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-paperless".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let router = Router::new().fallback(handle).with_state(app);
                    // Not a graceful shutdown: idle keep-alive connections of the test's
                    // clients must not hold up Drop. Dropping the runtime ends every task.
                    tokio::select! {
                        _ = axum::serve(listener, router).into_future() => {}
                        _ = rx => {}
                    }
                });
            })
            .expect("spawn fake Paperless thread");
        FakePaperless {
            url,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut lock(&self.state))
    }
}

impl Drop for FakePaperless {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The parts of a request the fake looks at.
struct Req {
    method: String,
    path: String,
    raw_query: String,
    /// Decoded query pairs, in order.
    query: Vec<(String, String)>,
    headers: HeaderMap,
    has_body: bool,
    /// The body parsed as JSON (`None`: empty or not JSON).
    json: Option<Value>,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn host(&self) -> &str {
        self.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1")
    }
}

async fn handle(
    Shared(app): Shared<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let req = Req {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        raw_query: uri.query().unwrap_or("").to_owned(),
        query,
        headers,
        has_body: !body.is_empty(),
        json: serde_json::from_slice(&body).ok(),
    };
    let (response, hooks) = {
        let mut st = lock(&app.state);
        let mut touched = Vec::new();
        let response = answer(&mut st, &req, &mut touched);
        st.requests.push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.raw_query.clone(),
            body: req.json.clone().unwrap_or(Value::Null),
            status: response.status().as_u16(),
        });
        let hooks = st.webhooks_for(&touched, &app.base_url);
        (response, hooks)
    };
    // Fire and forget, like Paperless's Celery task (5 s timeout, no redirects, errors ignored).
    for (url, body) in hooks {
        let http = app.http.clone();
        tokio::spawn(async move {
            let _ = http.post(url).json(&body).send().await;
        });
    }
    response
}

/// The full answer to one request; `touched` collects documents changed by a successful write.
fn answer(st: &mut State, req: &Req, touched: &mut Vec<i64>) -> Response {
    if st.down {
        return plain(503, TEXT, "Service Unavailable", None);
    }
    if let Some(status) = st.take_fault(&req.method, &req.path) {
        return fault(status);
    }
    let path = req.path.as_str();
    if path == "/api/" {
        // The Swagger UI, before any authentication.
        return plain(302, HTML, "", Some("schema/view/"));
    }
    if !(path == "/api" || path.starts_with("/api/")) {
        return plain(404, HTML, "<h1>Not Found</h1>", None);
    }
    if !path.ends_with('/') {
        // Without the slash the request falls through to the web UI, not the API.
        if req.method == "GET" || req.method == "HEAD" {
            let mut full = path.to_owned();
            if !req.raw_query.is_empty() {
                full = format!("{full}?{}", req.raw_query);
            }
            let location = format!("/accounts/login/?next={}", quote(&full, false));
            return plain(302, HTML, "", Some(&location));
        }
        return plain(403, HTML, CSRF_PAGE, None);
    }
    // DRF negotiates the version before it authenticates.
    let Some(version) = api_version(&req.headers) else {
        let body = json!({"detail": "Invalid version in \"Accept\" header."});
        return json_response(406, Some(&body), false);
    };
    if let Err(message) = authenticate(&req.headers) {
        let mut r = json_response(401, Some(&json!({"detail": message})), false);
        let value = header::HeaderValue::from_static("Token");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        return r;
    }
    let out = route(st, req, version, touched);
    json_response(out.status, out.body.as_ref(), true)
}

/// `None`: a version this server does not serve (→ 406). No version asked → 10.
fn api_version(headers: &HeaderMap) -> Option<u8> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for param in accept.split([',', ';']) {
        if let Some((key, value)) = param.split_once('=') {
            if key.trim().eq_ignore_ascii_case("version") {
                return match value.trim().trim_matches('"') {
                    "9" => Some(9),
                    "10" => Some(10),
                    _ => None,
                };
            }
        }
    }
    Some(10)
}

/// DRF's TokenAuthentication: `Token <key>`, scheme case-insensitive. Any other scheme
/// (e.g. `Bearer`) counts as no credentials at all.
fn authenticate(headers: &HeaderMap) -> Result<(), &'static str> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(NOT_PROVIDED);
    };
    let mut words = value.split_whitespace();
    let scheme = words.next().unwrap_or("");
    let rest: Vec<&str> = words.collect();
    if scheme.eq_ignore_ascii_case("basic") {
        return Err("Invalid username/password.");
    }
    if !scheme.eq_ignore_ascii_case("token") {
        return Err(NOT_PROVIDED);
    }
    match rest.as_slice() {
        [] => Err("Invalid token header. No credentials provided."),
        [t] if *t == TOKEN => Ok(()),
        [_] => Err("Invalid token."),
        _ => Err("Invalid token header. Token string should not contain spaces."),
    }
}

fn fault(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::INTERNAL_SERVER_ERROR {
        return plain(500, HTML, "<h1>Server Error (500)</h1>", None);
    }
    plain(
        code.as_u16(),
        TEXT,
        code.canonical_reason().unwrap_or("Error"),
        None,
    )
}

fn plain(status: u16, content_type: &str, body: &str, location: Option<&str>) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(l) = location {
        b = b.header(header::LOCATION, l);
    }
    b.body(Body::from(body.to_owned())).expect("response")
}

/// A JSON answer; `authenticated` ones carry the version headers (401/406 do not).
fn json_response(status: u16, body: Option<&Value>, authenticated: bool) -> Response {
    let mut b = Response::builder().status(status);
    if authenticated {
        b = b
            .header("x-api-version", API_VERSION)
            .header("x-version", SERVER_VERSION);
    }
    match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("response")
}

/// An API answer before the headers are added; `body: None` is an empty (204) body.
struct Out {
    status: u16,
    body: Option<Value>,
}

fn out(status: u16, body: Value) -> Out {
    Out {
        status,
        body: Some(body),
    }
}

fn detail(status: u16, message: &str) -> Out {
    out(status, json!({"detail": message}))
}

fn field_error(field: &str, message: &str) -> Out {
    out(400, json!({ field: [message] }))
}

fn route(st: &mut State, req: &Req, version: u8, touched: &mut Vec<i64>) -> Out {
    let rest = req.path["/api/".len()..].trim_end_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    let m = req.method.as_str();
    let not_allowed = || detail(405, &format!("Method \"{m}\" not allowed."));
    match segments.as_slice() {
        ["documents"] if m == "GET" => list_documents(st, req, version),
        ["documents", "bulk_edit"] if m == "POST" => {
            bulk_edit(st, req, touched).unwrap_or_else(|e| e)
        }
        ["documents", "bulk_edit"] | ["documents"] => not_allowed(),
        ["documents", id] if m == "GET" || m == "PATCH" => {
            let Some(id) = id.parse().ok().filter(|id| st.documents.contains_key(id)) else {
                return detail(404, NO_DOCUMENT);
            };
            if m == "GET" {
                out(200, doc_json(st, &st.documents[&id], Shape::Get))
            } else {
                patch_document(st, req, id, touched).unwrap_or_else(|e| e)
            }
        }
        ["documents", _] => not_allowed(),
        [kind] => match (Kind::from_segment(kind), m) {
            (Some(k), "GET") => list_objects(st, req, version, k),
            (Some(k), "POST") => create_object(st, req, k).unwrap_or_else(|e| e),
            (Some(_), _) => not_allowed(),
            (None, _) => detail(404, "Not found."),
        },
        [kind, id] => match (Kind::from_segment(kind), m) {
            (Some(k), "GET" | "DELETE") => {
                let Some(id) = id.parse().ok().filter(|id| st.objects(k).contains_key(id)) else {
                    return detail(404, &format!("No {} matches the given query.", k.model()));
                };
                if m == "GET" {
                    out(200, obj_json(st, k, &st.objects(k)[&id], true))
                } else {
                    delete_object(st, k, id)
                }
            }
            (Some(_), _) => not_allowed(),
            (None, _) => detail(404, "Not found."),
        },
        _ => detail(404, "Not found."),
    }
}
