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
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

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

/// DRF's PageNumberPagination as Paperless configures it (25 per page, `page_size` ≤ 100000,
/// absolute links from the Host header, `all` ids for API version 9).
fn paginate(req: &Req, version: u8, items: Vec<Value>, ids: Vec<i64>, is_tags: bool) -> Out {
    let count = items.len();
    let size = req
        .param("page_size")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map_or(25, |n| n.min(100_000));
    let pages = count.div_ceil(size).max(1);
    let page = match req.param("page") {
        None | Some("") => 1,
        Some("last") => pages,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if (1..=pages).contains(&n) => n,
            _ => return detail(404, "Invalid page."),
        },
    };
    let results: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    let next = (page < pages).then(|| page_link(req, Some(page + 1)));
    // The link back to page 1 carries no `page` at all.
    let previous = (page > 1).then(|| page_link(req, (page > 2).then_some(page - 1)));
    let mut m = Map::new();
    m.insert("count".into(), json!(count));
    m.insert("next".into(), json!(next));
    m.insert("previous".into(), json!(previous));
    if version < 10 {
        m.insert("all".into(), json!(ids));
    }
    m.insert("results".into(), Value::Array(results));
    if is_tags {
        m.insert("display_count".into(), json!(count));
    }
    out(200, Value::Object(m))
}

/// The request's URL with another `page`; DRF re-encodes the query sorted by key.
fn page_link(req: &Req, page: Option<usize>) -> String {
    let mut q: Vec<(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| k != "page")
        .cloned()
        .collect();
    if let Some(p) = page {
        q.push(("page".into(), p.to_string()));
    }
    q.sort_by(|a, b| a.0.cmp(&b.0));
    let query: Vec<String> = q
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k, true), quote(v, true)))
        .collect();
    let base = format!("http://{}{}", req.host(), req.path);
    if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

/// Python's `quote_plus` (`plus`) or `quote(s, safe="/")`.
fn quote(s: &str, plus: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' if plus => out.push('+'),
            b'/' if !plus => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn int_list(s: &str) -> Vec<i64> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn truthy(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The filters of Paperless's DocumentFilterSet the clients use; unknown ones are ignored
/// (as django-filter does).
fn doc_matches(d: &Doc, req: &Req) -> bool {
    let has = |t: &i64| d.tags.contains(t);
    let icontains = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
    req.query.iter().all(|(k, v)| {
        v.is_empty()
            || match k.as_str() {
                "tags__id__none" => !int_list(v).iter().any(has),
                "tags__id__all" => int_list(v).iter().all(has),
                "tags__id__in" => int_list(v).iter().any(has),
                "tags__id" => int_list(v).iter().all(has),
                "is_tagged" => truthy(v).is_none_or(|t| t != d.tags.is_empty()),
                "title__icontains" => icontains(&d.title, v),
                "content__icontains" => icontains(&d.content, v),
                "id__in" => int_list(v).contains(&d.id),
                "id" => v.parse() == Ok(d.id),
                "correspondent__id" => v.parse().ok() == d.correspondent,
                "document_type__id" => v.parse().ok() == d.document_type,
                "correspondent__isnull" => truthy(v).is_none_or(|n| n == d.correspondent.is_none()),
                "document_type__isnull" => truthy(v).is_none_or(|n| n == d.document_type.is_none()),
                _ => true,
            }
    })
}

/// `ordering=` (default `-created`), ties broken by id in the same direction.
fn sort_documents(docs: &mut [&Doc], ordering: Option<&str>) {
    let ordering = ordering.unwrap_or("-created");
    let (desc, field) = match ordering.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, ordering),
    };
    let key = |d: &Doc| match field {
        "added" => d.added.clone(),
        "modified" => d.modified.clone(),
        "title" => d.title.to_lowercase(),
        "id" => String::new(),
        _ => d.created.clone(),
    };
    docs.sort_by(|a, b| {
        let o = key(a).cmp(&key(b)).then(a.id.cmp(&b.id));
        if desc {
            o.reverse()
        } else {
            o
        }
    });
}

fn list_documents(st: &State, req: &Req, version: u8) -> Out {
    let mut docs: Vec<&Doc> = st
        .documents
        .values()
        .filter(|d| doc_matches(d, req))
        .collect();
    sort_documents(&mut docs, req.param("ordering"));
    let fields: Option<Vec<&str>> = req
        .param("fields")
        .map(|f| f.split(',').map(str::trim).collect());
    let ids = docs.iter().map(|d| d.id).collect();
    let items = docs
        .iter()
        .map(|d| {
            let v = doc_json(st, d, Shape::List);
            match &fields {
                // `?fields=` keeps the listed keys, in the serializer's order.
                Some(keep) => Value::Object(
                    v.as_object()
                        .expect("object")
                        .iter()
                        .filter(|(k, _)| keep.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                None => v,
            }
        })
        .collect();
    paginate(req, version, items, ids, false)
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    List,
    Get,
    Patch,
}

fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A document as Paperless serialises it. Only a single GET lists duplicates (documents with
/// the same content); the PATCH answer has `permissions` instead of the two "can" flags.
fn doc_json(st: &State, d: &Doc, shape: Shape) -> Value {
    let duplicates: Vec<Value> = match shape {
        Shape::Get => st
            .documents
            .values()
            .filter(|o| o.id != d.id && o.content == d.content)
            .map(|o| json!({"id": o.id, "title": o.title, "deleted_at": null}))
            .collect(),
        _ => Vec::new(),
    };
    let mime = if d.original_file_name.to_lowercase().ends_with(".pdf") {
        "application/pdf"
    } else {
        "text/plain"
    };
    let checksum = format!("{:x}", Sha256::digest(d.content.as_bytes()));
    let mut pairs = vec![
        ("id", json!(d.id)),
        ("correspondent", json!(d.correspondent)),
        ("document_type", json!(d.document_type)),
        ("storage_path", Value::Null),
        ("title", json!(d.title)),
        ("content", json!(d.content)),
        ("tags", json!(d.tags)),
        ("created", json!(d.created)),
        ("created_date", json!(d.created)),
        ("modified", json!(d.modified)),
        ("added", json!(d.added)),
        ("deleted_at", Value::Null),
        ("archive_serial_number", Value::Null),
        ("original_file_name", json!(d.original_file_name)),
        ("archived_file_name", Value::Null),
        ("duplicate_documents", json!(duplicates)),
        ("owner", json!(d.owner)),
    ];
    if shape == Shape::Patch {
        let nobody = json!({"users": [], "groups": []});
        pairs.push(("permissions", json!({"view": nobody, "change": nobody})));
    } else {
        pairs.push(("user_can_change", json!(true)));
        pairs.push(("is_shared_by_requester", json!(false)));
    }
    pairs.extend([
        ("notes", json!([])),
        ("custom_fields", json!([])),
        ("page_count", Value::Null),
        ("mime_type", json!(mime)),
        ("root_document", Value::Null),
        (
            "versions",
            json!([{"id": d.id, "added": d.added, "version_label": null,
                    "checksum": checksum, "is_root": true}]),
        ),
    ]);
    object(pairs)
}

/// Python's type name, as DRF puts it into error messages.
fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The request body as a JSON object (no body = `{}`), or DRF's 400.
fn json_object(req: &Req) -> Result<Map<String, Value>, Out> {
    match &req.json {
        _ if !req.has_body => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(out(
            400,
            json!({"non_field_errors": [format!(
                "Invalid data. Expected a dictionary, but got {}.", py_type(other))]}),
        )),
        None => Err(detail(400, "JSON parse error - not valid JSON")),
    }
}

/// DRF's PrimaryKeyRelatedField: an existing id (numeric strings allowed), else its message.
fn pk(st: &State, kind: Kind, v: &Value) -> Result<i64, String> {
    let id = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let Some(id) = id else {
        return Err(format!(
            "Incorrect type. Expected pk value, received {}.",
            py_type(v)
        ));
    };
    if st.objects(kind).contains_key(&id) {
        Ok(id)
    } else {
        Err(format!("Invalid pk \"{id}\" - object does not exist."))
    }
}

/// DRF's CharField: strings (and numbers) trimmed, at most `max` characters.
fn char_field(v: &Value, max: Option<usize>) -> Result<String, String> {
    let s = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Null => return Err("This field may not be null.".into()),
        _ => return Err("Not a valid string.".into()),
    };
    match max {
        Some(m) if s.chars().count() > m => Err(format!(
            "Ensure this field has no more than {m} characters."
        )),
        _ => Ok(s),
    }
}

/// `YYYY-MM-DD`; a datetime (with `:`) is cut to its date, as Paperless 3.x does.
fn date_field(v: &Value) -> Result<String, String> {
    let wrong = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.";
    let s = match v {
        Value::Null => return Err("This field may not be null.".into()),
        Value::String(s) if s.contains(':') && s.len() > 10 => s.get(..10).unwrap_or(""),
        Value::String(s) => s.as_str(),
        _ => return Err(wrong.into()),
    };
    let shaped = s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
    if shaped && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() {
        Ok(s.to_owned())
    } else {
        Err(wrong.into())
    }
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn not_a_pk(v: &Value) -> String {
    format!(
        "Incorrect type. Expected pk value, received {}.",
        py_type(v)
    )
}

fn invalid_choice(v: &Value) -> String {
    let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    format!("\"{shown}\" is not a valid choice.")
}

/// DRF's field errors, if any, as the 400 answer.
fn reject(errors: Map<String, Value>) -> Result<(), Out> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(out(400, Value::Object(errors)))
    }
}

/// The ids in order, each once (Paperless keeps tags as a set).
fn unique(ids: Vec<i64>) -> Vec<i64> {
    let mut out = Vec::new();
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// A list of distinct integer ids that all `exist`, as bulk_edit insists.
fn id_list(v: &Value, exists: impl Fn(&i64) -> bool) -> Option<Vec<i64>> {
    let items = v.as_array()?;
    let ids: Vec<i64> = items.iter().filter_map(Value::as_i64).collect();
    let distinct = unique(ids.clone()).len() == ids.len();
    (ids.len() == items.len() && distinct && ids.iter().all(exists)).then_some(ids)
}

/// PATCH: every given field is validated first; any error → 400 and nothing changes.
/// `tags` replaces the whole list.
fn patch_document(st: &mut State, req: &Req, id: i64, touched: &mut Vec<i64>) -> Result<Out, Out> {
    let body = json_object(req)?;
    let mut doc = st.documents[&id].clone();
    let mut errors = Map::new();
    let mut fail = |field: &str, msg: String| {
        errors.insert(field.to_owned(), json!([msg]));
    };
    let relation = |kind, v: &Value| match v {
        Value::Null => Ok(None),
        _ => pk(st, kind, v).map(Some),
    };
    // In the serializer's field order, so a multi-field error object reads like Paperless's.
    if let Some(v) = body.get("correspondent") {
        let r = relation(Kind::Correspondent, v);
        r.map_or_else(|e| fail("correspondent", e), |c| doc.correspondent = c);
    }
    if let Some(v) = body.get("document_type") {
        let r = relation(Kind::DocumentType, v);
        r.map_or_else(|e| fail("document_type", e), |t| doc.document_type = t);
    }
    if let Some(v) = body.get("title") {
        char_field(v, Some(NAME_MAX)).map_or_else(|e| fail("title", e), |t| doc.title = t);
    }
    if let Some(v) = body.get("content") {
        char_field(v, None).map_or_else(|e| fail("content", e), |c| doc.content = c);
    }
    if let Some(v) = body.get("tags") {
        let tags = match v {
            Value::Array(items) => items.iter().map(|t| pk(st, Kind::Tag, t)).collect(),
            Value::Null => Err("This field may not be null.".to_owned()),
            other => Err(format!(
                "Expected a list of items but got type \"{}\".",
                py_type(other)
            )),
        };
        tags.map_or_else(|e| fail("tags", e), |t| doc.tags = unique(t));
    }
    if let Some(v) = body.get("created") {
        date_field(v).map_or_else(|e| fail("created", e), |c| doc.created = c);
    }
    reject(errors)?;
    doc.modified = now();
    st.documents.insert(id, doc.clone());
    touched.push(id);
    Ok(out(200, doc_json(st, &doc, Shape::Patch)))
}

const BULK_METHODS: [&str; 5] = [
    "add_tag",
    "remove_tag",
    "modify_tags",
    "set_correspondent",
    "set_document_type",
];

/// POST /api/documents/bulk_edit/: field errors first (documents, method), then the method's
/// parameters (`non_field_errors`), then the change itself.
fn bulk_edit(st: &mut State, req: &Req, touched: &mut Vec<i64>) -> Result<Out, Out> {
    let body = json_object(req)?;
    let mut errors = Map::new();
    let docs = body
        .get("documents")
        .map(|v| id_list(v, |d| st.documents.contains_key(d)));
    let missing = "Some documents in documents don't exist or were specified twice.";
    match docs {
        None => errors.insert("documents".into(), json!(["This field is required."])),
        Some(None) => errors.insert("documents".into(), json!([missing])),
        Some(Some(_)) => None,
    };
    let method = body.get("method");
    match method.map(|m| m.as_str().filter(|m| BULK_METHODS.contains(m))) {
        None => errors.insert("method".into(), json!(["This field is required."])),
        Some(None) => errors.insert("method".into(), json!([invalid_choice(&body["method"])])),
        Some(Some(_)) => None,
    };
    reject(errors)?;
    let method = method.and_then(Value::as_str).unwrap_or_default();
    let params = body
        .get("parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let change =
        bulk_change(st, method, &params).map_err(|m| field_error("non_field_errors", &m))?;
    let docs = docs.flatten().unwrap_or_default();
    for id in &docs {
        let d = st.documents.get_mut(id).expect("validated above");
        match &change {
            Change::Tags(add, remove) => {
                d.tags.retain(|t| !remove.contains(t));
                d.tags = unique(d.tags.iter().chain(add).copied().collect());
            }
            Change::Correspondent(c) => d.correspondent = *c,
            Change::DocumentType(t) => d.document_type = *t,
        }
    }
    touched.extend(docs);
    Ok(out(200, json!({"result": "OK"})))
}

enum Change {
    /// (add, remove)
    Tags(Vec<i64>, Vec<i64>),
    Correspondent(Option<i64>),
    DocumentType(Option<i64>),
}

/// Validates a bulk_edit method's parameters (Paperless's messages) into the change to apply.
fn bulk_change(st: &State, method: &str, p: &Map<String, Value>) -> Result<Change, String> {
    let given = |key: &str| p.get(key).ok_or(format!("{key} not specified"));
    let tag = || -> Result<i64, String> {
        let t = given("tag")?.as_i64().filter(|t| st.tags.contains_key(t));
        t.ok_or_else(|| "Tag does not exist".into())
    };
    let tags = |key: &str| -> Result<Vec<i64>, String> {
        id_list(given(key)?, |t| st.tags.contains_key(t)).ok_or(format!(
            "Some tags in {key} don't exist or were specified twice."
        ))
    };
    let relation = |key: &str, kind: Kind, label: &str| -> Result<Option<i64>, String> {
        match given(key)? {
            Value::Null => Ok(None),
            v => v
                .as_i64()
                .filter(|id| st.objects(kind).contains_key(id))
                .map(Some)
                .ok_or(format!("{label} does not exist")),
        }
    };
    Ok(match method {
        "add_tag" => Change::Tags(vec![tag()?], vec![]),
        "remove_tag" => Change::Tags(vec![], vec![tag()?]),
        "modify_tags" => Change::Tags(tags("add_tags")?, tags("remove_tags")?),
        "set_correspondent" => Change::Correspondent(relation(
            "correspondent",
            Kind::Correspondent,
            "Correspondent",
        )?),
        _ => Change::DocumentType(relation(
            "document_type",
            Kind::DocumentType,
            "Document type",
        )?),
    })
}

/// Django's `slugify`, minus the transliteration of accented letters (they are dropped).
fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if (c == '-' || c.is_whitespace()) && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches(['-', '_']).to_owned()
}

/// A tag / correspondent / document type as listed (`with_count`) or as created.
fn obj_json(st: &State, kind: Kind, o: &Obj, with_count: bool) -> Value {
    let mut pairs = vec![
        ("id", json!(o.id)),
        ("slug", json!(slugify(&o.name))),
        ("name", json!(o.name)),
    ];
    if kind == Kind::Tag {
        pairs.push(("color", json!("#a6cee3")));
        pairs.push(("text_color", json!("#000000")));
    }
    pairs.push(("match", json!("")));
    pairs.push(("matching_algorithm", json!(o.matching_algorithm)));
    pairs.push(("is_insensitive", json!(true)));
    if kind == Kind::Tag {
        pairs.push(("is_inbox_tag", json!(false)));
    }
    if with_count {
        pairs.push(("document_count", json!(st.document_count(kind, o.id))));
    }
    pairs.push(("owner", json!(o.owner)));
    pairs.push(("user_can_change", json!(true)));
    if kind == Kind::Tag {
        pairs.push(("parent", Value::Null));
        pairs.push(("children", json!([])));
    }
    object(pairs)
}

fn list_objects(st: &mut State, req: &Req, version: u8, kind: Kind) -> Out {
    let is_tags = kind == Kind::Tag;
    if let Some(name) = req.param("name__iexact") {
        let wanted = name.to_lowercase();
        if let Some(i) = st
            .stale_lookups
            .iter()
            .position(|s| s.to_lowercase() == wanted)
        {
            // The race: the other client's object is not visible to this first lookup.
            st.stale_lookups.remove(i);
            return paginate(req, version, Vec::new(), Vec::new(), is_tags);
        }
    }
    let matches = |o: &Obj| {
        req.query.iter().all(|(k, v)| match k.as_str() {
            // Unicode-aware, like the database's case folding for `iexact`.
            "name__iexact" => o.name.to_lowercase() == v.to_lowercase(),
            "name__icontains" => o.name.to_lowercase().contains(&v.to_lowercase()),
            "id__in" => v.is_empty() || int_list(v).contains(&o.id),
            "id" => v.is_empty() || v.parse() == Ok(o.id),
            _ => true,
        })
    };
    let mut objs: Vec<&Obj> = st.objects(kind).values().filter(|o| matches(o)).collect();
    objs.sort_by_key(|o| (o.name.to_lowercase(), o.id));
    let ids = objs.iter().map(|o| o.id).collect();
    let items = objs.iter().map(|o| obj_json(st, kind, o, true)).collect();
    paginate(req, version, items, ids, is_tags)
}

/// POST: 201 with the new object. Unique per (exact name, owner); the owner is the token's
/// user unless the body names one (`null` = shared).
fn create_object(st: &mut State, req: &Req, kind: Kind) -> Result<Out, Out> {
    let body = json_object(req)?;
    let mut errors = Map::new();
    let name = match body.get("name").map(|v| char_field(v, Some(NAME_MAX))) {
        None => Err("This field is required.".to_owned()),
        Some(Ok(n)) if n.is_empty() => Err("This field may not be blank.".to_owned()),
        Some(r) => r,
    };
    let name = name.unwrap_or_else(|e| {
        errors.insert("name".into(), json!([e]));
        String::new()
    });
    let algorithm = body.get("matching_algorithm");
    let algorithm = algorithm.map_or(Some(1), |v| v.as_i64().filter(|m| (0..=6).contains(m)));
    if algorithm.is_none() {
        let e = invalid_choice(&body["matching_algorithm"]);
        errors.insert("matching_algorithm".into(), json!([e]));
    }
    let owner = match body.get("owner") {
        None => Some(USER),
        Some(Value::Null) => None,
        Some(v) => v.as_i64().or_else(|| {
            errors.insert("owner".into(), json!([not_a_pk(v)]));
            None
        }),
    };
    reject(errors)?;
    if st
        .objects(kind)
        .values()
        .any(|o| o.name == name && o.owner == owner)
    {
        // A plain string, not DRF's usual list: what 3.0.5 answers.
        let e = "Object violates owner / name unique constraint";
        return Err(out(400, json!({ "error": e })));
    }
    let id = st.take_id();
    let matching_algorithm = algorithm.unwrap_or(1);
    let obj = Obj {
        id,
        name,
        owner,
        matching_algorithm,
    };
    st.objects_mut(kind).insert(id, obj.clone());
    let mut v = obj_json(st, kind, &obj, false);
    // Echo the display settings sent; `Obj` does not keep them, so lists show the defaults.
    for key in ["color", "match", "is_insensitive", "is_inbox_tag"] {
        if let (Some(given), Some(slot)) = (body.get(key), v.get_mut(key)) {
            if std::mem::discriminant(given) == std::mem::discriminant(slot) {
                *slot = given.clone();
            }
        }
    }
    Ok(out(201, v))
}

/// DELETE: 204; documents lose the reference.
fn delete_object(st: &mut State, kind: Kind, id: i64) -> Out {
    st.objects_mut(kind).remove(&id);
    for d in st.documents.values_mut() {
        match kind {
            Kind::Tag => d.tags.retain(|t| *t != id),
            Kind::Correspondent if d.correspondent == Some(id) => d.correspondent = None,
            Kind::DocumentType if d.document_type == Some(id) => d.document_type = None,
            _ => {}
        }
    }
    Out {
        status: 204,
        body: None,
    }
}
