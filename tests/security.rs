//! Every attack from the security review, replayed against a real `candlelight serve` on
//! loopback as an attacker would send it: the store never reads, writes or deletes a file
//! outside its folders; a web page (cross-origin or DNS-rebound) cannot drive the API; crafted
//! values are 4xx answers, not crashes; what writes needs a key; every resource a request can
//! ask for is bounded.

mod common;
mod fake_paperless;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use fake_paperless::{Doc, FakePaperless, State, TOKEN};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};

const MODEL: &str = "smollm2:135m";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Status and JSON body (`Null` when not JSON).
fn send(r: RequestBuilder) -> (u16, Value) {
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

/// One HTTP/1.1 request written by hand (to set Host freely); the status code.
fn raw_status(addr: &str, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn model_names(s: &Server) -> Vec<String> {
    let (_, tags) = send(client().get(format!("{}/api/tags", s.url)));
    tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_store_never_touches_a_file_outside_its_folders() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let c = client();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let post = |path: &str, body: Value| send(c.post(format!("{}{path}", s.url)).json(&body));

    // The reported attack: copy an absolute path, then delete the copy.
    let (st, body) = post(
        "/api/copy",
        json!({"source": victim.to_str().unwrap(), "destination": "evil"}),
    );
    assert_eq!(st, 400, "{body}");
    assert!(
        error_of(&body).contains("paths are not model names"),
        "{body}"
    );
    let (st, _) = send(
        c.delete(format!("{}/api/delete", s.url))
            .json(&json!({"model": "evil"})),
    );
    assert_eq!(st, 404);
    // Relative escapes, through every endpoint that names a model.
    let escapes = [
        victim.to_str().unwrap().to_owned(),
        "../victim".to_owned(),
        "cache/../../victim".to_owned(),
        "/etc/hostname".to_owned(),
        format!("{}/x", s.models_dir.path().display()),
    ];
    for probe in &escapes {
        for (path, body) in [
            ("/api/copy", json!({"source": probe, "destination": "x"})),
            ("/api/copy", json!({"source": MODEL, "destination": probe})),
            ("/api/show", json!({"model": probe})),
            ("/api/pull", json!({"model": probe, "stream": false})),
            ("/api/create", json!({"model": probe, "from": MODEL})),
            ("/api/create", json!({"model": "x", "from": probe})),
            (
                "/api/create",
                json!({"model": "x", "modelfile": format!("FROM {probe}")}),
            ),
            ("/api/generate", json!({"model": probe, "prompt": "hi"})),
            ("/api/chat", json!({"model": probe, "messages": []})),
            ("/api/embed", json!({"model": probe, "input": "hi"})),
            ("/v1/embeddings", json!({"model": probe, "input": "hi"})),
        ] {
            let (st, reply) = post(path, body);
            assert!((400..500).contains(&st), "{path} {probe}: {st} {reply}");
            assert!(!reply.to_string().contains("precious"), "{reply}");
        }
        let (st, _) = send(
            c.delete(format!("{}/api/delete", s.url))
                .json(&json!({"model": probe})),
        );
        assert_eq!(st, 400, "{probe}");
    }
    // A FIFO would block a thread forever if it were opened: it is never looked at.
    let fifo = outside.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    let (st, _) = post("/api/show", json!({"model": fifo.to_str().unwrap()}));
    assert_eq!(st, 400);
    assert!(t.elapsed() < Duration::from_secs(5));
    // A manifest someone placed by hand cannot point outside the cache either.
    std::fs::write(
        s.models_dir.path().join("planted.toml"),
        format!(
            "name = \"planted\"\ntags = [\"latest\"]\nfile = {:?}\n",
            victim.to_str().unwrap()
        ),
    )
    .unwrap();
    let (st, _) = send(
        c.delete(format!("{}/api/delete", s.url))
            .json(&json!({"model": "planted"})),
    );
    assert_eq!(st, 404);
    assert!(!model_names(&s).contains(&"planted:latest".to_owned()));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // Copy never replaces a name: not a built-in one (which would break the model for good).
    let (st, body) = post("/api/copy", json!({"source": MODEL, "destination": MODEL}));
    assert_eq!(st, 409, "{body}");
    let (st, _) = post(
        "/api/copy",
        json!({"source": MODEL, "destination": "llama3.2:1b"}),
    );
    assert_eq!(st, 409);
    let (st, _) = post("/api/copy", json!({"source": MODEL, "destination": "mine"}));
    assert_eq!(st, 200);
    let (st, _) = post("/api/copy", json!({"source": MODEL, "destination": "mine"}));
    assert_eq!(st, 409);
    let (st, body) = post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(st, 200, "{body}");
    // Deleting removes the store's own manifest and link, never what the link points at.
    let (st, _) = send(
        c.delete(format!("{}/api/delete", s.url))
            .json(&json!({"model": "mine"})),
    );
    assert_eq!(st, 200);
    let (st, _) = send(
        c.delete(format!("{}/api/delete", s.url))
            .json(&json!({"model": MODEL})),
    );
    assert_eq!(st, 200);
    assert!(common::test_model_path().exists());
    assert!(!model_names(&s).contains(&MODEL.to_owned()));
}

#[test]
fn a_web_page_cannot_drive_the_api() {
    let _one = common::serial();
    let s = Server::start_with_env(&[], &[("OLLAMA_ORIGINS", "https://chat.example.com")]);
    let c = client();
    let url = |p: &str| format!("{}{p}", s.url);
    let copy = json!({"source": MODEL, "destination": "pwned"}).to_string();

    // A cross-origin "simple" request (no preflight) is refused outright, whatever its type,
    // on every endpoint that writes (a model file upload included).
    let blob = format!("/api/blobs/sha256:{}", "ab".repeat(32));
    for path in ["/api/copy", "/api/create", blob.as_str()] {
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json",
        ] {
            let (st, body) = send(
                c.post(url(path))
                    .header("Origin", "http://evil.example")
                    .header("Content-Type", ct)
                    .body(copy.clone()),
            );
            assert_eq!(st, 403, "{path} {ct}: {body}");
            assert!(error_of(&body).contains("OLLAMA_ORIGINS"));
        }
    }
    assert!(
        !s.models_dir.path().join("cache/blobs").exists(),
        "nothing uploaded"
    );
    let (st, _) = send(
        c.get(url("/api/tags"))
            .header("Origin", "http://evil.example"),
    );
    assert_eq!(st, 403);
    let (st, _) = send(
        c.post(url("/api/copy"))
            .header("Origin", "null")
            .body(copy.clone()),
    );
    assert_eq!(st, 403);
    // Bodies a page could send without a preflight are not JSON requests.
    let (st, body) = send(
        c.post(url("/api/copy"))
            .header("Content-Type", "text/plain")
            .body(copy.clone()),
    );
    assert_eq!(st, 415, "{body}");
    let (st, _) = send(
        c.post(url("/api/generate"))
            .header("Content-Type", "multipart/form-data; boundary=x")
            .body("--x\r\n\r\n--x--"),
    );
    assert_eq!(st, 415);
    assert!(!model_names(&s).contains(&"pwned:latest".to_owned()));
    // What curl -d sends (form type, JSON body) works, as with Ollama.
    let (st, body) = send(
        c.post(url("/api/show"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(json!({"model": MODEL}).to_string()),
    );
    assert_eq!(st, 200, "{body}");
    // Allowed pages: local ones (IPv6 included) and OLLAMA_ORIGINS.
    for origin in [
        "http://localhost:3000",
        "http://[::1]:5173",
        "https://chat.example.com",
    ] {
        let r = c
            .request(reqwest::Method::OPTIONS, url("/api/chat"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{origin}");
        assert_eq!(
            r.headers()["access-control-allow-origin"].to_str().unwrap(),
            origin
        );
        let (st, _) = send(c.get(url("/api/version")).header("Origin", origin));
        assert_eq!(st, 200, "{origin}");
    }
    // DNS rebinding: a page whose own name now resolves to 127.0.0.1.
    let addr = s.url.trim_start_matches("http://");
    let get = |host: &str| {
        raw_status(
            addr,
            &format!("GET /api/tags HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    assert_eq!(get("attacker.example:11434"), 403);
    assert_eq!(get("localhost.attacker.example"), 403);
    for ok in ["localhost:11434", "127.0.0.1", "[::1]:11434", "nas.local"] {
        assert_eq!(get(ok), 200, "{ok}");
    }
}

#[test]
fn crafted_values_get_a_4xx_answer_not_a_crash() {
    let _one = common::serial();
    let s = Server::start_with_env(
        &[],
        &[
            ("CANDLELIGHT_MAX_BODY_BYTES", "200000"),
            ("CANDLELIGHT_HEADER_TIMEOUT", "1s"),
            ("CANDLELIGHT_MAX_CONNECTIONS", "4"),
        ],
    );
    let c = client();
    let post = |path: &str, body: Value| send(c.post(format!("{}{path}", s.url)).json(&body));
    for ka in [
        json!("NaN"),
        json!("inf"),
        json!("-inf"),
        json!("99999999999h"),
    ] {
        let (st, body) = post("/api/generate", json!({"model": MODEL, "keep_alive": ka}));
        assert_eq!(st, 400, "{ka}: {body}");
    }
    let (st, body) = post("/api/generate", json!({"model": MODEL, "keep_alive": 1e30}));
    assert_eq!(st, 200, "{body}");
    let (_, ps) = send(c.get(format!("{}/api/ps", s.url)));
    assert_eq!(ps["models"][0]["name"], MODEL, "{ps}");

    // The body limit is the configured one, and its 413 is JSON, refused from the declared
    // length (the body is never parsed; what arrives is dropped, for two seconds at most).
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut t = TcpStream::connect(&addr).unwrap();
    t.write_all(
        b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 300000\r\nConnection: close\r\n\r\n{",
    )
    .unwrap();
    let mut answer = String::new();
    t.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error":"request body too large: the limit is 200000 bytes""#));
    let (st, body) = send(c.put(format!("{}/api/generate", s.url)));
    assert_eq!((st, error_of(&body)), (405, "method not allowed"));
    let (st, body) = send(c.get(format!("{}/v1/nope", s.url)));
    assert_eq!(st, 404);
    assert!(body["error"]["message"].is_string(), "{body}");

    // Embeddings: the number of inputs is bounded, long texts cost only what is kept.
    let many: Vec<&str> = vec!["x"; 50_000];
    let t = Instant::now();
    let (st, body) = post("/api/embed", json!({"model": "all-minilm", "input": many}));
    assert_eq!(st, 413, "{body}");
    let few: Vec<&str> = vec!["x"; 1025];
    let (st, body) = post("/api/embed", json!({"model": "all-minilm", "input": few}));
    assert_eq!(st, 400, "{body}");
    assert!(error_of(&body).contains("at most 1024"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // A client still sending a body over the limit reads the 413 (a connection closed with
    // unread bytes would be reset and the answer lost).
    for _ in 0..5 {
        let big = "x".repeat(4 << 20);
        let (st, body) = post("/api/generate", json!({"model": MODEL, "prompt": big}));
        assert_eq!(st, 413, "{body}");
    }
    let long = "word ".repeat(30_000);
    let (st, body) = post(
        "/api/embed",
        json!({"model": "all-minilm", "input": [long, "short"]}),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 2);

    // Generate on an embedding model is refused without loading it.
    let (_, body) = post(
        "/api/generate",
        json!({"keep_alive": 0, "model": "all-minilm"}),
    );
    assert!(body.is_object());
    let (st, _) = post(
        "/api/generate",
        json!({"model": "all-minilm", "prompt": "hi"}),
    );
    assert_eq!(st, 400);
    let (_, ps) = send(c.get(format!("{}/api/ps", s.url)));
    assert!(!ps.to_string().contains("all-minilm"), "{ps}");

    // A client that stalls mid-headers is dropped; held connections are bounded, and the next
    // client is served once a slot frees.
    // Earlier keep-alive connections have been closed by now (idle longer than 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let addr = s.url.trim_start_matches("http://").to_owned();
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut t = TcpStream::connect(&addr).unwrap();
            t.write_all(b"GET /api/tags HTTP/1.1\r\nHost: local")
                .unwrap();
            t
        })
        .collect();
    let t = Instant::now();
    let fresh = Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (st, _) = send(fresh.get(format!("{}/api/version", s.url)));
    assert_eq!(st, 200);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    for mut t in stalled {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(t.read(&mut buf).unwrap_or(0), 0, "closed by the server");
    }
}

#[test]
fn streams_cut_at_the_shutdown_grace_end_with_an_error_line() {
    use std::io::BufRead;
    let _one = common::serial();
    let mut s = Server::start(&["--preload", MODEL, "--shutdown-grace", "1"]);
    let r = client()
        .post(format!("{}/api/generate", s.url))
        .json(&json!({"model": MODEL, "prompt": "Tell a very long story.",
                      "options": {"num_predict": 100000, "temperature": 1.0, "seed": 1}}))
        .send()
        .unwrap();
    let mut reader = std::io::BufReader::new(r);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let pid = s.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let last: Value = reader
        .lines()
        .map_while(Result::ok)
        .last()
        .map(|l| serde_json::from_str(&l).unwrap())
        .unwrap();
    assert!(error_of(&last).contains("shutting down"), "{last}");
    assert!(s.child.wait().unwrap().success());
}

/// Beyond loopback, nobody on the network stores a file on the server without the key (an
/// open upload would let anyone fill the disk); on loopback it works as Ollama's does.
#[test]
fn model_uploads_from_the_network_need_the_key() {
    let _one = common::serial();
    let s = Server::start(&["--host", "0.0.0.0:0"]);
    let c = client();
    let bytes = b"GGUF, or so it says".to_vec();
    let digest = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&bytes))
    };
    let (st, body) = send(
        c.post(format!("{}/api/blobs/sha256:{digest}", s.url))
            .body(bytes.clone()),
    );
    assert_eq!(st, 403, "{body}");
    assert!(error_of(&body).contains("CANDLELIGHT_API_KEY"), "{body}");
    assert!(!s.models_dir.path().join("cache/blobs").exists());
    let local = Server::start(&[]);
    let (st, _) = send(
        c.post(format!("{}/api/blobs/sha256:{digest}", local.url))
            .body(bytes),
    );
    assert_eq!(st, 201);
}

#[test]
fn writes_need_the_key_and_reads_do_not() {
    let _one = common::serial();
    let s = Server::start_with_env(&[], &[("CANDLELIGHT_API_KEY", "k-123")]);
    let c = client();
    let copy = |auth: Option<&str>| {
        let mut r = c
            .post(format!("{}/api/copy", s.url))
            .json(&json!({"source": MODEL, "destination": "keyed"}));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        send(r).0
    };
    assert_eq!(copy(None), 401);
    assert_eq!(copy(Some("Basic k-123")), 401);
    assert_eq!(copy(Some("Bearer k-12")), 401);
    assert_eq!(copy(Some("Bearer k-123")), 200);
    let digest = format!("sha256:{}", "ab".repeat(32));
    for (method, path, body) in [
        (
            "DELETE",
            "/api/delete".to_owned(),
            json!({"model": "keyed"}),
        ),
        ("POST", "/api/pull".to_owned(), json!({"model": "nosuch"})),
        (
            "POST",
            "/api/create".to_owned(),
            json!({"model": "k2", "from": MODEL}),
        ),
        ("POST", format!("/api/blobs/{digest}"), json!("bytes")),
        ("HEAD", format!("/api/blobs/{digest}"), json!(null)),
    ] {
        let r = c
            .request(method.parse().unwrap(), format!("{}{path}", s.url))
            .json(&body);
        assert_eq!(send(r).0, 401, "{path}");
    }
    let created = c
        .post(format!("{}/api/create", s.url))
        .header("Authorization", "Bearer k-123")
        .json(&json!({"model": "k2", "from": MODEL, "stream": false}));
    assert_eq!(send(created).0, 200);
    // Inference and reading stay open, as in Ollama.
    let (st, _) = send(c.get(format!("{}/api/tags", s.url)));
    assert_eq!(st, 200);
    let (st, _) = send(
        c.post(format!("{}/api/show", s.url))
            .json(&json!({"model": MODEL})),
    );
    assert_eq!(st, 200);
}

fn doc_with(id: i64, content: &str) -> Doc {
    Doc::new(id, &format!("scan_{id:04}"), content)
}

#[test]
fn paperless_writes_beyond_loopback_need_a_token_and_the_queue_is_bounded() {
    let _one = common::serial();
    let mut state = State::seeded();
    for id in 10..30 {
        state.documents.insert(
            id,
            doc_with(id, "Rechnung Nr. 1 vom 02.03.2024 über 10 EUR"),
        );
    }
    let fake = FakePaperless::start_with(state);
    let env = [
        ("PAPERLESS_URL", fake.url.as_str()),
        ("PAPERLESS_API_TOKEN", TOKEN),
        ("SCAN_INTERVAL", "0"),
    ];
    // Beyond loopback without a token: refused, with what to set.
    let open = Server::start_with_env(&["--host", "0.0.0.0:0"], &env);
    let c = client();
    let (st, body) = send(
        c.post(format!("{}/api/paperless/webhook", open.url))
            .json(&json!({"document_id": 10})),
    );
    assert_eq!(st, 403, "{body}");
    assert!(error_of(&body).contains("CANDLELIGHT_WEBHOOK_TOKEN"));
    let (st, _) = send(
        c.post(format!("{}/api/classify", open.url))
            .json(&json!({"document_id": 10})),
    );
    assert_eq!(st, 403);
    // Undo writes to Paperless and the journal shows the owner's titles: guarded alike.
    let (st, body) = send(
        c.post(format!("{}/api/paperless/undo", open.url))
            .json(&json!({"document_id": 10})),
    );
    assert_eq!(st, 403, "{body}");
    let (st, body) = send(c.get(format!("{}/api/paperless/journal", open.url)));
    assert_eq!(st, 403, "{body}");
    // A web page cannot reach them either, whatever the listening address.
    let (st, _) = send(
        c.post(format!("{}/api/paperless/undo", open.url))
            .header("Origin", "https://attacker.example")
            .json(&json!({"document_id": 10})),
    );
    assert_eq!(st, 403);
    drop(open);

    let mut env = env.to_vec();
    env.extend([
        ("CANDLELIGHT_WEBHOOK_TOKEN", "w-1"),
        ("CANDLELIGHT_QUEUE_CAPACITY", "3"),
    ]);
    let s = Server::start_with_env(&["--host", "0.0.0.0:0"], &env);
    let hook = |id: i64, auth: &str| {
        send(
            c.post(format!("{}/api/paperless/webhook", s.url))
                .header("Authorization", auth)
                .json(&json!({"document_id": id})),
        )
    };
    assert_eq!(hook(10, "Basic w-1").0, 401);
    assert_eq!(hook(10, "Bearer nope").0, 401);
    // Ten webhooks while the first document is still being classified: three wait, the rest
    // are told to come back, and a repeated id is not queued twice.
    let answers: Vec<(u16, Value)> = (10..20).map(|id| hook(id, "Bearer w-1")).collect();
    let accepted = answers.iter().filter(|(st, _)| *st == 202).count();
    assert_eq!(accepted, 3, "{answers:?}");
    for (st, body) in &answers[3..] {
        assert_eq!(*st, 503, "{body}");
        assert!(error_of(body).contains("queue is full"), "{body}");
    }
    let (st, body) = hook(11, "Bearer w-1");
    assert_eq!(st, 202);
    assert_eq!(body["status"], "already_queued");
}
