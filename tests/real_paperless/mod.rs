//! The real Paperless-ngx 3.0.5 from ../shared/paperless-ngx, started by the tests themselves
//! (`start` is idempotent and serialised: every test binary shares one instance), and the few
//! API calls tests need to set up an archive: upload a text document and wait until it is
//! consumed, create tags/types/users, set fields.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use reqwest::blocking::{multipart, Client};

use crate::common::Server;
use serde_json::{json, Value};

pub struct RealPaperless {
    pub url: String,
    pub token: String,
    client: Client,
}

/// A number unique to this test run, for names, owners and matching rules: the instance is
/// shared by every run on the machine and keeps their data.
pub fn run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

impl RealPaperless {
    /// candlelight serving this instance with polling off and its data folder at `data`;
    /// `extra` settings on top.
    pub fn serve(&self, data: &std::path::Path, extra: &[(&str, &str)]) -> Server {
        let mut env = vec![
            ("PAPERLESS_URL", self.url.as_str()),
            ("PAPERLESS_API_TOKEN", self.token.as_str()),
            ("SCAN_INTERVAL", "0"),
            ("CANDLELIGHT_DATA_DIR", data.to_str().unwrap()),
        ];
        env.extend_from_slice(extra);
        Server::start_with_env(&[], &env)
    }

    /// Whether document `id` carries the tag named `name` now.
    pub fn has_tag(&self, id: i64, name: &str) -> bool {
        let found = self.get(&format!("/api/tags/?name__iexact={}", urlenc(name)));
        let Some(tag) = found["results"][0]["id"].as_i64() else {
            return false;
        };
        let doc = self.get(&format!("/api/documents/{id}/"));
        doc["tags"].as_array().unwrap().contains(&tag.into())
    }

    /// The names of a document's tags.
    pub fn tag_names(&self, doc: &Value) -> Vec<String> {
        doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                self.get(&format!("/api/tags/{t}/"))["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// Starts (or joins) the instance; panics with the harness's own message if it cannot.
    pub fn start() -> RealPaperless {
        Self::launch("start", &[])
    }

    /// A second, private instance in its own folder and ports, sharing the first one's Python
    /// environment, started afresh (its database wiped) with `conf` (Paperless settings as
    /// `KEY=VALUE` lines). Stopped when the returned guard is dropped.
    pub fn start_private(name: &str, conf: &str) -> (RealPaperless, PrivateInstance) {
        let main = Self::start();
        let main_dir = std::env::var("PAPERLESS_HARNESS_DIR")
            .unwrap_or_else(|_| "/tmp/paperless-harness".to_owned());
        let venv =
            std::env::var("PAPERLESS_HARNESS_VENV").unwrap_or_else(|_| format!("{main_dir}/venv"));
        drop(main);
        let dir = format!("{main_dir}-{name}");
        std::fs::create_dir_all(&dir).unwrap();
        let conf_file = format!("{dir}.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let port = free_port().to_string();
        let redis = free_port().to_string();
        let env = vec![
            ("PAPERLESS_HARNESS_DIR".to_owned(), dir.clone()),
            ("PAPERLESS_HARNESS_VENV".to_owned(), venv),
            ("PAPERLESS_HARNESS_PORT".to_owned(), port),
            ("PAPERLESS_HARNESS_REDIS_PORT".to_owned(), redis),
            ("PAPERLESS_HARNESS_EXTRA_CONF".to_owned(), conf_file),
            ("PAPERLESS_HARNESS_RESET".to_owned(), "1".to_owned()),
        ];
        let pl = Self::launch("start", &env);
        (pl, PrivateInstance { dir, env })
    }

    fn launch(script: &str, env: &[(String, String)]) -> RealPaperless {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/paperless-ngx")
            .join(script);
        let out = std::process::Command::new(&script)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| panic!("{} cannot run: {e}", script.display()));
        assert!(
            out.status.success(),
            "the real Paperless did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let var = |k: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("start printed no {k}: {stdout}"))
                .trim()
                .to_owned()
        };
        RealPaperless {
            url: var("PAPERLESS_URL"),
            token: var("PAPERLESS_API_TOKEN"),
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .header("Authorization", format!("Token {}", self.token))
            .header("Accept", "application/json; version=9")
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self.req(reqwest::Method::GET, path).send().unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().unwrap()
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .req(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .unwrap();
        let status = r.status();
        let text = r.text().unwrap();
        assert!(status.is_success(), "POST {path} {body}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub fn patch(&self, path: &str, body: Value) -> Value {
        let r = self
            .req(reqwest::Method::PATCH, path)
            .json(&body)
            .send()
            .unwrap();
        let status = r.status();
        let text = r.text().unwrap();
        assert!(status.is_success(), "PATCH {path} {body}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A tag, document type or correspondent named `name` (created if missing, unowned: the
    /// household's shared vocabulary every user may see): its id.
    pub fn object(&self, kind: &str, name: &str) -> i64 {
        let found = self.get(&format!("/api/{kind}/?name__iexact={}", urlenc(name)));
        if let Some(id) = found["results"][0]["id"].as_i64() {
            return id;
        }
        self.post(
            &format!("/api/{kind}/"),
            json!({"name": name, "matching_algorithm": 0, "owner": null}),
        )["id"]
            .as_i64()
            .unwrap()
    }

    /// A user (created if missing): its id.
    pub fn user(&self, name: &str) -> i64 {
        let found = self.get(&format!("/api/users/?username__iexact={name}"));
        if let Some(id) = found["results"][0]["id"].as_i64() {
            return id;
        }
        self.post(
            "/api/users/",
            json!({"username": name, "password": "a-long-test-password-1"}),
        )["id"]
            .as_i64()
            .unwrap()
    }

    /// Uploads `text` as a .txt document and waits until Paperless consumed it: its id.
    /// `title` must be unique per upload (Paperless refuses duplicate content, so it is also
    /// written into the text).
    pub fn upload(&self, title: &str, text: &str) -> i64 {
        self.submit(title, text, &[]);
        self.consumed(title)
    }

    /// Uploads `text` as `<title>.txt` with `tags`, without waiting for its consumption.
    pub fn submit(&self, title: &str, text: &str, tags: &[i64]) {
        let body = format!("{title}\n{text}");
        let mut form = multipart::Form::new().text("title", title.to_owned()).part(
            "document",
            multipart::Part::bytes(body.into_bytes())
                .file_name(format!("{title}.txt"))
                .mime_str("text/plain")
                .unwrap(),
        );
        for t in tags {
            form = form.text("tags", t.to_string());
        }
        let r = self
            .req(reqwest::Method::POST, "/api/documents/post_document/")
            .multipart(form)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "upload {title}: {}", r.status());
    }

    /// The id of the document titled `title`, once Paperless has consumed it.
    pub fn consumed(&self, title: &str) -> i64 {
        let start = Instant::now();
        loop {
            let found = self.get(&format!(
                "/api/documents/?title__iexact={}&fields=id",
                urlenc(title)
            ));
            if let Some(id) = found["results"][0]["id"].as_i64() {
                return id;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "Paperless did not consume {title}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn delete(&self, path: &str) {
        let r = self.req(reqwest::Method::DELETE, path).send().unwrap();
        assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
    }
}

/// Stops a private instance (`RealPaperless::start_private`) when dropped.
pub struct PrivateInstance {
    dir: String,
    env: Vec<(String, String)>,
}

impl PrivateInstance {
    /// Stops the instance (its data stays).
    pub fn stop(&self) {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/paperless-ngx/stop");
        let out = std::process::Command::new(script)
            .env("PAPERLESS_HARNESS_DIR", &self.dir)
            .output()
            .unwrap();
        crate::common::assert_success(&out);
    }

    /// Starts it again on the same address, with its data.
    pub fn restart(&self) {
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| k != "PAPERLESS_HARNESS_RESET")
            .cloned()
            .collect();
        RealPaperless::launch("start", &env);
    }
}

impl Drop for PrivateInstance {
    fn drop(&mut self) {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/paperless-ngx/stop");
        let _ = std::process::Command::new(script)
            .env("PAPERLESS_HARNESS_DIR", &self.dir)
            .output();
    }
}

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
