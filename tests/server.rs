//! `candlelight serve` on loopback with the real model, driven over HTTP: real third-party
//! clients (official ollama Python and npm packages, openai Python package) and every error
//! path with its status and body.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use reqwest::blocking::Client;
use serde_json::{json, Value};

const MODEL: &str = "smollm2:135m";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

fn run_client(cmd: &str, script: &str, s: &Server) {
    let root = common::repo_root();
    let out = Command::new(cmd)
        .arg(root.join("tests/clients").join(script))
        .args([&s.url, MODEL])
        .output()
        .unwrap_or_else(|e| panic!("{cmd} not runnable ({e}): run scripts/test-deps"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed (run scripts/test-deps if a module is missing):\n{stdout}\n{stderr}\nserver log:\n{}",
        s.log()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn official_clients_work_against_the_server() {
    let _one = common::serial();
    let s = Server::start(&["--preload", MODEL]);
    run_client("python3", "ollama_py_check.py", &s);
    run_client("python3", "openai_py_check.py", &s);
    run_client("node", "ollama_npm_check.mjs", &s);
}

#[test]
fn error_paths_have_ollama_status_and_body() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let c = client();
    let raw = |path: &str, body: &'static str| {
        let r = c
            .post(format!("{}{path}", s.url))
            .body(body)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    assert_eq!(
        raw("/api/generate", ""),
        (400, json!({"error": "missing request body"}))
    );
    let (st, body) = raw("/api/chat", "{not json");
    assert_eq!(st, 400);
    assert!(
        body["error"].as_str().unwrap().contains("invalid"),
        "{body}"
    );

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/api/generate",
            json!({"prompt": "hi"}),
            400,
            "model is required",
        ),
        (
            "/api/generate",
            json!({"model": "nosuch:7b", "prompt": "hi"}),
            404,
            "model 'nosuch:7b' not found",
        ),
        (
            "/api/chat",
            json!({"model": "nosuch", "messages": []}),
            404,
            "model 'nosuch' not found",
        ),
        (
            "/api/show",
            json!({"model": "nosuch"}),
            404,
            "model 'nosuch' not found",
        ),
        (
            "/api/embed",
            json!({"model": "nosuch", "input": "x"}),
            404,
            "model 'nosuch' not found",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "hi", "options": {"num_ctx": "big"}}),
            400,
            "option \"num_ctx\" must be of type integer",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "hi", "options": {"temperature": "hot"}}),
            400,
            "option \"temperature\" must be of type float",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "think": true}),
            400,
            "\"smollm2:135m\" does not support thinking",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "hi", "format": "xml"}),
            400,
            "invalid format",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "hi", "format": {"type": "string", "pattern": "(?<=a)b"}}),
            400,
            "invalid JSON schema",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "hi", "raw": true, "system": "s"}),
            400,
            "raw mode does not support template, system, or context",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "hi", "keep_alive": true}),
            400,
            "Unsupported type",
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "hi", "top_logprobs": 21}),
            400,
            "top_logprobs must be between 0 and 20",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi", "images": ["AAAA"]}]}),
            400,
            "does not support images",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "get weather"}}]}),
            400,
            "tool name \"get weather\": use 1 to 64 letters",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}),
            400,
            "must describe an object",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}}}}]}),
            400,
            "invalid tools",
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]}),
            400,
            "tool call arguments must be a JSON object",
        ),
        (
            "/api/embed",
            json!({"model": MODEL, "input": 5}),
            400,
            "invalid input type",
        ),
        (
            "/api/copy",
            json!({"source": "nosuch", "destination": "x"}),
            404,
            "model \"nosuch\" not found",
        ),
        (
            "/api/pull",
            json!({"model": "nosuch:1b"}),
            404,
            "file does not exist",
        ),
    ];
    for (path, body, status, msg) in cases {
        let (st, got) = s.post(path, body.clone());
        assert_eq!(st, status, "{path} {body} -> {got}");
        let err = got["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {got}"));
        assert!(err.contains(msg), "{path} {body}: {err:?} lacks {msg:?}");
    }
    let r = c
        .delete(format!("{}/api/delete", s.url))
        .json(&json!({"model": "nosuch"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // OpenAI routes answer in OpenAI's error shape.
    let (st, got) = s.post(
        "/v1/chat/completions",
        json!({"model": "nosuch", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(st, 404);
    assert_eq!(got["error"]["type"], "not_found_error");
    assert!(got["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not found"));

    // Oversized bodies are refused from their Content-Length, before being read.
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(s.url.trim_start_matches("http://")).unwrap();
        write!(
            tcp,
            "POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                     Content-Length: 40000000\r\nConnection: close\r\n\r\n{{"
        )
        .unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 413");
    }

    // Unknown keys in options are ignored, not fatal.
    let (st, got) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "hi", "stream": false,
        "options": {"num_predict": 2, "mirostat": 2}}),
    );
    assert_eq!(st, 200, "{got}");
    assert!(s.log().contains("invalid option provided"), "{}", s.log());
}

#[test]
fn liveness_version_streaming_and_final_fields() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let c = client();
    let r = c.get(&s.url).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), "Ollama is running");
    assert_eq!(c.head(&s.url).send().unwrap().status().as_u16(), 200);
    let v: Value = c
        .get(format!("{}/api/version", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(v["version"].is_string());

    let r = c
        .post(format!("{}/api/generate", s.url))
        .json(&json!({"model": MODEL, "prompt": "Why is the sky blue?", "options": {"temperature": 0, "num_predict": 8}}))
        .send()
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = BufReader::new(r)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|l| l["done"] == false && l["response"].is_string()));
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 8);
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
        "prompt_eval_count",
    ] {
        assert!(last[k].as_u64().unwrap() > 0, "{k} in {last}");
    }
    // Nanoseconds: 8 tokens take far more than 8000 ns, far less than an hour.
    assert!(last["eval_duration"].as_u64().unwrap() > 1_000_000);
    assert!(last["total_duration"].as_u64().unwrap() >= last["eval_duration"].as_u64().unwrap());
    let created = last["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");

    let r = c
        .post(format!("{}/api/chat", s.url))
        .json(&json!({"model": MODEL, "stream": false, "messages": [{"role": "user", "content": "Hi"}],
                      "options": {"num_predict": 4}}))
        .send()
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = r.json().unwrap();
    assert_eq!(v["message"]["role"], "assistant");
    assert!(v.get("context").is_none(), "chat has no context");
}

#[test]
fn context_continues_a_conversation_and_load_unload_work() {
    let _one = common::serial();
    let s = Server::start(&[]);
    // The card read from the file (not loaded) is the one the loaded model carries.
    let (st, unloaded) = s.post("/api/show", json!({"model": MODEL}));
    assert_eq!(st, 200, "{unloaded}");
    assert!(
        unloaded["parameters"]
            .as_str()
            .unwrap()
            .contains("stop \"<|im_end|>\""),
        "{unloaded}"
    );
    assert!(unloaded["template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>assistant"));
    assert_eq!(unloaded["capabilities"], json!(["completion", "tools"]));
    let (st, first) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "My name is Ada.",
        "stream": false, "options": {"temperature": 0, "num_predict": 6}}),
    );
    assert_eq!(st, 200, "{first}");
    let context = first["context"].as_array().unwrap().clone();
    assert!(context.len() > first["prompt_eval_count"].as_u64().unwrap() as usize);
    let (st, second) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "What is my name?",
        "context": context, "stream": false, "options": {"temperature": 0, "num_predict": 6}}),
    );
    assert_eq!(st, 200);
    let (_, loaded) = s.post("/api/show", json!({"model": MODEL}));
    assert_eq!(
        loaded, unloaded,
        "/api/show is the same once the model is loaded"
    );
    let ctx2 = second["context"].as_array().unwrap();
    assert!(
        ctx2.starts_with(&context),
        "the new context extends the old one"
    );
    // A request's own template replaces the model's.
    let (st, v) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "Hi", "stream": false,
        "template": "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n",
        "options": {"num_predict": 3}}),
    );
    assert_eq!(st, 200, "{v}");
    // <|im_start|> user \n Hi <|im_end|> \n <|im_start|> assistant(2) \n: no default system turn.
    assert_eq!(v["prompt_eval_count"], 10, "{v}");
    assert_eq!(
        v["context"][0], 1,
        "the template's <|im_start|> is a control token"
    );
    let (st, v) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "Hi",
        "template": "{{ range .Messages }}{{ end }}"}),
    );
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("unsupported action"),
        "{v}"
    );
    // Raw mode returns no context.
    let (_, raw) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "The sky is", "raw": true,
        "stream": false, "options": {"num_predict": 3}}),
    );
    assert!(raw.get("context").is_none(), "{raw}");

    // Empty prompt loads; keep_alive 0 unloads.
    let (_, v) = s.post("/api/generate", json!({"model": MODEL}));
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    let ps: Value = client()
        .get(format!("{}/api/ps", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ps["models"][0]["name"], MODEL);
    assert_eq!(ps["models"][0]["size_vram"], 0);
    let (_, v) = s.post(
        "/api/chat",
        json!({"model": MODEL, "messages": [], "keep_alive": 0}),
    );
    assert_eq!(v["done_reason"], "unload");
    assert_eq!(v["message"]["content"], "");
    let ps: Value = client()
        .get(format!("{}/api/ps", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ps["models"], json!([]));

    // keep_alive 0 on a real request unloads right after it.
    s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "hi", "keep_alive": 0, "stream": false,
        "options": {"num_predict": 1}}),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps: Value = client()
            .get(format!("{}/api/ps", s.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if ps["models"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "model not unloaded: {ps}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn over_long_prompts_keep_the_instructions() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let doc = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(60);
    let body = |truncate: Option<bool>| {
        let mut b = json!({"model": MODEL, "stream": false, "options": {"num_ctx": 256, "num_predict": 4},
            "messages": [{"role": "system", "content": "INSTRUCTIONS: answer with one word."},
                         {"role": "user", "content": format!("START {doc} END")}]});
        if let Some(t) = truncate {
            b["truncate"] = json!(t);
        }
        b
    };
    let (st, v) = s.post("/api/chat", body(Some(false)));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("num_ctx"), "{v}");
    let (st, v) = s.post("/api/chat", body(None));
    assert_eq!(st, 200, "{v}");
    assert!(v["prompt_eval_count"].as_u64().unwrap() <= 256);
    assert!(
        s.log()
            .contains("cut the middle of the longest user message"),
        "{}",
        s.log()
    );
}

#[test]
fn copy_and_delete_names() {
    let _one = common::serial();
    let s = Server::start(&[]);
    assert_eq!(
        s.post(
            "/api/copy",
            json!({"source": MODEL, "destination": "mine:v1"})
        )
        .0,
        200
    );
    let tags: Value = client()
        .get(format!("{}/api/tags", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "mine:v1"),
        "{tags}"
    );
    let (st, v) = s.post(
        "/api/generate",
        json!({"model": "mine:v1", "prompt": "hi", "stream": false,
        "options": {"num_predict": 1}}),
    );
    assert_eq!(st, 200, "{v}");
    let r = client()
        .delete(format!("{}/api/delete", s.url))
        .json(&json!({"model": "mine:v1"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(s.post("/api/show", json!({"model": "mine:v1"})).0, 404);
    assert_eq!(
        s.post("/api/show", json!({"model": MODEL})).0,
        200,
        "the original stays"
    );
}

/// Starts a long streamed generation and returns its line reader after the first chunk.
fn long_stream(s: &Server) -> BufReader<reqwest::blocking::Response> {
    let r = client()
        .post(format!("{}/api/generate", s.url))
        .json(
            &json!({"model": MODEL, "prompt": "Write a very long story about a lighthouse keeper.",
                      "options": {"num_predict": 3000, "temperature": 0.8}}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"done\":false"), "{line}");
    reader
}

#[test]
fn full_queue_is_503_and_a_client_leaving_frees_its_slot() {
    let _one = common::serial();
    let s = Server::start(&["--max-queue", "1"]);
    let stream = long_stream(&s);
    let (st, v) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "hi", "stream": false}),
    );
    assert_eq!(st, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("busy"), "{v}");
    // A schema that cannot compile is refused at admission with 400, not queued (the full
    // queue would answer 503) and not failed later by the busy model's worker.
    let (st, v) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "hi", "stream": false, "format": {"type": "nonsense"}}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("invalid JSON schema"),
        "{v}"
    );
    // The client goes away mid-stream: generation stops and the slot frees up, long before
    // 3000 tokens could have been generated.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, v) = s.post(
            "/api/generate",
            json!({"model": MODEL, "prompt": "hi", "stream": false,
            "options": {"num_predict": 1}}),
        );
        if st == 200 {
            break;
        }
        assert_eq!(st, 503, "{v}");
        assert!(Instant::now() < deadline, "generation was not cancelled");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_lets_the_running_stream_finish() {
    let _one = common::serial();
    let mut s = Server::start(&[]);
    let r = client()
        .post(format!("{}/api/generate", s.url))
        .json(
            &json!({"model": MODEL, "prompt": "Count to twenty.", "options": {"num_predict": 40}}),
        )
        .send()
        .unwrap();
    let mut reader = BufReader::new(r);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let rest: Vec<Value> = reader
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let last = rest.last().expect("stream continued");
    assert_eq!(last["done"], true, "{last}");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", s.log());
    assert!(s.log().contains("shutting down"), "{}", s.log());
}

#[test]
fn parallel_slots_interleave_generations() {
    let _one = common::serial();
    let s = Server::start(&["--num-parallel", "2"]);
    let r = client()
        .post(format!("{}/api/generate", s.url))
        .json(
            &json!({"model": MODEL, "prompt": "Write a long story about a lighthouse keeper.",
                      "options": {"num_predict": 150, "temperature": 0}}),
        )
        .send()
        .unwrap();
    let mut a = BufReader::new(r);
    let mut line = String::new();
    a.read_line(&mut line).unwrap();
    // B starts after A's first token and is short; with one slot it would wait for all of A.
    let (st, b) = s.post(
        "/api/chat",
        json!({"model": MODEL, "stream": false,
        "messages": [{"role": "user", "content": "Say hi."}], "options": {"num_predict": 5}}),
    );
    assert_eq!(st, 200, "{b}");
    let last: Value = a
        .lines()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
        .last()
        .unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"], 150);
    // Timestamps are the server's own: A ended after B, so they ran side by side.
    assert!(
        last["created_at"].as_str().unwrap() > b["created_at"].as_str().unwrap(),
        "A {} should end after B {}",
        last["created_at"],
        b["created_at"]
    );
}

/// What Open WebUI's native function calling sends to an Ollama connection
/// (`backend/open_webui/utils/payload.py`): its own `metadata` beside the request, options it
/// passes through whether or not they apply, the tools, streaming; then the call goes back as
/// an assistant message (`index`, `id`, arguments as an object, content "") and the result as a
/// `tool` message that names the call only by `tool_call_id`.
#[test]
fn open_webui_native_tool_calling_round_trip() {
    let _one = common::serial();
    let s = Server::start(&[]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string",
            "description": "City name"}}, "required": ["city"]}}}]);
    let question = json!({"role": "user", "content": "<tool_call> get_weather for Berlin"});
    let lines = |body: Value| s.post_ndjson("/api/chat", body);
    let first = lines(json!({
        "model": MODEL, "messages": [question.clone()], "stream": true,
        "tools": tools, "keep_alive": "5m",
        "options": {"temperature": 0, "num_gpu": 1, "use_mmap": true},
        "metadata": {"chat_id": "c1", "message_id": "m1", "session_id": "s1",
                     "tool_ids": ["weather"], "features": {"web_search": false}}}));
    let with_calls: Vec<&Value> = first
        .iter()
        .filter(|l| l["message"]["tool_calls"].is_array())
        .collect();
    assert_eq!(with_calls.len(), 1, "{first:?}");
    let call = &with_calls[0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["function"]["arguments"]["city"].is_string(), "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(first.last().unwrap()["done"], true);

    let follow = lines(json!({
        "model": MODEL, "stream": true, "tools": tools, "options": {"temperature": 0, "num_predict": 24},
        "messages": [question,
            {"role": "assistant", "content": "", "tool_calls": [{"index": 0, "id": id,
                "function": {"name": "get_weather", "arguments": call["function"]["arguments"]}}]},
            {"role": "tool", "tool_call_id": id, "content": "14 degrees, rain"}]}));
    let last = follow.last().unwrap();
    assert_eq!(last["done"], true, "{follow:?}");
    // The call and its result were rendered into the prompt (a call block and a response
    // block: well over 20 tokens more than the question alone).
    let asked = first.last().unwrap()["prompt_eval_count"].as_u64().unwrap();
    let answered = last["prompt_eval_count"].as_u64().unwrap();
    assert!(answered > asked + 20, "{asked} -> {answered}");
}

/// `/api/create` from an uploaded file and from a model, with a Modelfile's defaults applied
/// to every request; blobs land under their digest or not at all; nothing is read from or
/// written to a path a request names.
#[test]
fn create_from_an_uploaded_file_and_from_a_model() {
    use sha2::{Digest, Sha256};
    let _one = common::serial();
    let s = Server::start(&[]);
    let c = client();
    let file = std::fs::read(common::test_model_path()).unwrap();
    let hex = hex::encode(Sha256::digest(&file));
    let blob = |digest: &str| format!("{}/api/blobs/{digest}", s.url);
    let blobs_dir = s.models_dir.path().join("cache/blobs");
    let head = |h: &str| {
        c.head(blob(&format!("sha256:{h}")))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(head(&hex), 404);

    // A body that does not match its digest leaves nothing behind.
    let wrong = "0".repeat(64);
    let r = c
        .post(blob(&format!("sha256:{wrong}")))
        .body(file.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("digest mismatch"));
    assert_eq!(head(&wrong), 404);
    let leftovers = std::fs::read_dir(&blobs_dir).unwrap().count();
    assert_eq!(leftovers, 0, "no partial upload is kept");
    let r = c.post(blob("sha256:../../etc")).body("x").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let r = c
        .post(blob(&format!("sha256:{hex}")))
        .header("content-type", "application/octet-stream")
        .body(file)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(head(&hex), 200);

    // A model from the upload, with defaults.
    let (st, v) = s.post(
        "/api/create",
        json!({"model": "filer", "files": {"model.gguf": format!("sha256:{hex}")},
               "system": "You file household papers.",
               "parameters": {"temperature": 0, "num_predict": 5}, "stream": false}),
    );
    assert_eq!((st, &v), (200, &json!({"status": "success"})));
    let (_, show) = s.post("/api/show", json!({"model": "filer"}));
    assert_eq!(show["system"], "You file household papers.");
    assert!(
        show["parameters"]
            .as_str()
            .unwrap()
            .contains("num_predict 5"),
        "{show}"
    );
    let ask = |model: &str| {
        let (st, v) = s.post(
            "/api/generate",
            json!({"model": model, "prompt": "Hi", "stream": false}),
        );
        assert_eq!(st, 200, "{v}");
        v
    };
    let a = ask("filer");
    assert_eq!(a["eval_count"], 5, "num_predict from the model: {a}");
    assert_eq!(
        ask("filer")["response"],
        a["response"],
        "temperature 0 from the model"
    );
    // The same as the base model asked with those settings by hand.
    let (_, by_hand) = s.post(
        "/api/generate",
        json!({"model": MODEL, "prompt": "Hi", "stream": false, "system": "You file household papers.",
               "options": {"temperature": 0, "num_predict": 5}}),
    );
    assert_eq!(a["context"], by_hand["context"], "{a} vs {by_hand}");
    assert_eq!(a["response"], by_hand["response"]);

    // A model from that model, by Modelfile: it keeps the system prompt, adds turns.
    let (st, v) = s.post(
        "/api/create",
        json!({"model": "filer:brief", "modelfile":
            "FROM filer\nPARAMETER num_predict 3\nMESSAGE user \"Who are you?\"\nMESSAGE assistant \"\"\"A filing clerk.\"\"\"\n"}),
    );
    assert_eq!(st, 200, "{v}");
    let (_, show) = s.post("/api/show", json!({"model": "filer:brief"}));
    assert_eq!(show["system"], "You file household papers.");
    assert_eq!(show["messages"][1]["content"], "A filing clerk.");
    let (st, v) = s.post(
        "/api/chat",
        json!({"model": "filer:brief", "stream": false, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!((st, v["eval_count"].as_u64()), (200, Some(3)), "{v}");
    let (_, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "filer:brief", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(
        v["usage"]["completion_tokens"], 3,
        "OpenAI requests get the defaults too: {v}"
    );

    // What is refused, and how.
    let refused = [
        (
            json!({"model": "x", "from": "/etc/passwd"}),
            400,
            "invalid model name",
        ),
        (
            json!({"model": "x", "path": "/tmp/Modelfile"}),
            400,
            "never read",
        ),
        (json!({"model": "x", "from": "nosuch:7b"}), 404, "not found"),
        (
            json!({"model": MODEL, "from": "filer"}),
            409,
            "already exists",
        ),
        (
            json!({"model": "x", "from": "filer", "quantize": "q4_K_M"}),
            400,
            "quantize",
        ),
        (
            json!({"model": "x", "files": {"a.gguf": format!("sha256:{wrong}")}}),
            400,
            "upload it first",
        ),
        (
            json!({"model": "x", "modelfile": "FROM filer\nADAPTER ./lora.gguf"}),
            400,
            "ADAPTER",
        ),
        (
            json!({"model": "x", "from": "filer", "parameters": {"temperature": "hot"}}),
            400,
            "temperature",
        ),
        (
            json!({"model": "x", "from": "filer", "template": "{{ range .Messages }}{{ end }}"}),
            400,
            "template",
        ),
    ];
    for (body, status, says) in refused {
        let (st, v) = s.post("/api/create", body.clone());
        assert_eq!(st, status, "{body} -> {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body} -> {v}");
    }
    // An upload that is not a model gets no name.
    let text = b"not a model".to_vec();
    let text_hex = hex::encode(Sha256::digest(&text));
    let r = c
        .post(blob(&format!("sha256:{text_hex}")))
        .body(text)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (st, v) = s.post(
        "/api/create",
        json!({"model": "junk", "files": {"x.gguf": format!("sha256:{text_hex}")}}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a model"), "{v}");
    let (st, v) = s.post("/api/push", json!({"model": "filer"}));
    assert_eq!(st, 501, "{v}");

    // Deleting the names removes the upload once nothing points at it.
    for name in ["filer", "filer:brief"] {
        let r = c
            .delete(format!("{}/api/delete", s.url))
            .json(&json!({"model": name}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{name}");
    }
    assert_eq!(head(&hex), 404);
}
