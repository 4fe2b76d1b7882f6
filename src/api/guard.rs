//! Who may drive the API, checked before any handler runs: Ollama's host rule (bound to
//! loopback, only local Host headers — no DNS rebinding), Ollama's origin rule (a request from
//! a web page whose origin is not allowed is refused, not merely left unreadable), bodies a
//! web page can send without a CORS preflight refused where no JSON client sends them, and the
//! bearer keys that protect what writes (the model store, Paperless).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;

/// One `OLLAMA_ORIGINS` entry: `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern(String);

impl OriginPattern {
    pub fn new(p: &str) -> Self {
        Self(p.trim().to_ascii_lowercase())
    }

    fn matches(&self, origin: &str) -> bool {
        glob(self.0.as_bytes(), origin.as_bytes())
    }
}

/// `*`-only glob, iterative (no recursion an attacker's header could deepen).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Which key protects an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Pull, copy, delete: the model store.
    Models,
    /// The webhook and `/api/classify` by document id: writes to Paperless.
    Paperless,
    /// `POST /api/blobs`: the one write that stores bytes the caller chooses (up to a model
    /// file's size). Beyond loopback only with `CANDLELIGHT_API_KEY`: a network open to
    /// anyone must not be able to fill the disk.
    Uploads,
}

/// The access rules, decided once at start-up from the configuration.
#[derive(Debug, Clone)]
pub struct Guard {
    origins: Vec<OriginPattern>,
    /// Listening on loopback only: Host headers must name this machine.
    loopback: bool,
    hostname: Option<String>,
    /// CANDLELIGHT_API_KEY: required for everything that writes, when set.
    api_key: Option<String>,
    /// CANDLELIGHT_WEBHOOK_TOKEN: also accepted for Paperless writes.
    paperless_token: Option<String>,
    /// Paperless writes without any key: only on loopback, or when the operator said so.
    open_paperless_writes: bool,
}

/// Ollama's default origins (`envconfig.AllowedOrigins`), plus `[::1]`, which Ollama lists
/// nowhere but is as local as 127.0.0.1.
fn default_origins() -> Vec<OriginPattern> {
    let mut out = Vec::new();
    for host in ["localhost", "127.0.0.1", "0.0.0.0", "[::1]"] {
        for scheme in ["http", "https"] {
            out.push(OriginPattern::new(&format!("{scheme}://{host}")));
            out.push(OriginPattern::new(&format!("{scheme}://{host}:*")));
        }
    }
    for app in [
        "app://*",
        "file://*",
        "tauri://*",
        "vscode-webview://*",
        "vscode-file://*",
    ] {
        out.push(OriginPattern::new(app));
    }
    out
}

/// A key from the environment: blank (an empty Secret key) means none.
fn key(k: Option<&str>) -> Option<String> {
    k.map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

impl Guard {
    /// `origins`: OLLAMA_ORIGINS (comma-separated); `bound`: the listening address.
    pub fn new(
        origins: &str,
        bound: SocketAddr,
        api_key: Option<&str>,
        paperless_token: Option<&str>,
        allow_open_paperless_writes: bool,
    ) -> Self {
        let mut list: Vec<OriginPattern> = origins
            .split(',')
            .filter(|o| !o.trim().is_empty())
            .map(OriginPattern::new)
            .collect();
        list.extend(default_origins());
        let loopback = bound.ip().is_loopback();
        Guard {
            origins: list,
            loopback,
            hostname: hostname(),
            api_key: key(api_key),
            paperless_token: key(paperless_token),
            open_paperless_writes: loopback || allow_open_paperless_writes,
        }
    }

    /// Whether Paperless writes need a key that is not configured (so they are refused).
    pub fn paperless_writes_closed(&self) -> bool {
        self.api_key.is_none() && self.paperless_token.is_none() && !self.open_paperless_writes
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        self.origins.iter().any(|p| p.matches(&origin))
    }

    /// Ollama's `allowedHostsMiddleware`: when bound to loopback, a Host header must name
    /// this machine (localhost, a local or private address, `*.localhost`/`.local`/`.internal`,
    /// the hostname). Anything else is a page that rebound its own name to 127.0.0.1.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        if !self.loopback {
            return true;
        }
        let Some(host) = host.map(|h| h.trim().to_ascii_lowercase()) else {
            return true;
        };
        let name = strip_port(&host);
        if name.is_empty() || name == "localhost" {
            return true;
        }
        if let Ok(ip) = name
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            return local_ip(ip);
        }
        if self.hostname.as_deref() == Some(name) {
            return true;
        }
        [".localhost", ".local", ".internal"]
            .iter()
            .any(|tld| name.ends_with(tld))
    }

    /// The bearer key check for an endpoint that writes.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        let mut accepted: Vec<&str> = self.api_key.iter().map(String::as_str).collect();
        if scope == Scope::Paperless {
            accepted.extend(self.paperless_token.as_deref());
        }
        if accepted.is_empty() {
            return match scope {
                Scope::Uploads if !self.loopback => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "uploading model files needs a key when candlelight listens beyond \
                     loopback: set CANDLELIGHT_API_KEY and send it as `Authorization: Bearer \
                     <key>` (or upload on the server's own machine)",
                )),
                Scope::Paperless if !self.open_paperless_writes => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "writes to Paperless need a token when candlelight listens beyond \
                     loopback: set CANDLELIGHT_WEBHOOK_TOKEN (and send it as `Authorization: \
                     Bearer <token>` from the Paperless workflow), or \
                     CANDLELIGHT_ALLOW_UNAUTHENTICATED_PAPERLESS=yes to accept anyone on the \
                     network",
                )),
                _ => Ok(()),
            };
        }
        let given = bearer(headers);
        if given.is_some_and(|g| accepted.iter().any(|k| same(g.as_bytes(), k.as_bytes()))) {
            return Ok(());
        }
        let which = match scope {
            Scope::Models | Scope::Uploads => "CANDLELIGHT_API_KEY",
            Scope::Paperless => "CANDLELIGHT_WEBHOOK_TOKEN or CANDLELIGHT_API_KEY",
        };
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("token missing or wrong: send the header `Authorization: Bearer <{which}>`"),
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` header; any other scheme is no token.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

fn local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_unspecified() || v4.is_link_local()
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg0 & 0xfe00) == 0xfc00 // unique local
                || (seg0 & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| local_ip(IpAddr::V4(v4)))
        }
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

/// Bodies a web page can send without a CORS preflight, besides the form encoding that
/// `curl -d` uses (which every Ollama example relies on).
fn preflight_free(content_type: &str) -> bool {
    let ct = content_type.trim().to_ascii_lowercase();
    ct.starts_with("text/plain") || ct.starts_with("multipart/form-data")
}

fn is_json(content_type: &str) -> bool {
    let ct = content_type.trim().to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence == "application/json" || essence.ends_with("+json")
}

/// Host and origin checks (outermost layer), then the body type check.
pub async fn check_request(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !guard.host_allowed(host) {
        tracing::warn!(host, path = %req.uri().path(), "refused: Host is not this machine");
        return refuse(
            &req,
            StatusCode::FORBIDDEN,
            "the Host header does not name this machine: candlelight listens on loopback",
        );
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or(""));
    if let Some(o) = origin {
        if !guard.origin_allowed(o) {
            tracing::warn!(origin = o, path = %req.uri().path(), "refused: origin not allowed");
            return refuse(
                &req,
                StatusCode::FORBIDDEN,
                "requests from this web page's origin are not allowed: add it to OLLAMA_ORIGINS",
            );
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|c| c.to_str().unwrap_or("?"))
        .unwrap_or("");
    let has_body = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let webhook = req.uri().path() == "/api/paperless/webhook";
    // A JSON endpoint takes JSON (or curl's default form type); text/plain only from an
    // allowed page (a page's fetch() without headers sends it), multipart only on the webhook
    // (Paperless's include_document).
    if has_body
        && !content_type.is_empty()
        && !is_json(content_type)
        && preflight_free(content_type)
    {
        let multipart_ok = webhook && content_type.to_ascii_lowercase().starts_with("multipart/");
        let plain_ok =
            origin.is_some() && content_type.to_ascii_lowercase().starts_with("text/plain");
        if !multipart_ok && !plain_ok {
            return refuse(
                &req,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the request body as JSON (Content-Type: application/json)",
            );
        }
    }
    next.run(req).await
}

fn refuse(req: &Request, status: StatusCode, message: &str) -> Response {
    super::error_response(req.uri().path(), ApiError::new(status, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(bound: &str) -> Guard {
        Guard::new(
            "https://app.example.com, http://*.lan:*",
            bound.parse().unwrap(),
            None,
            None,
            false,
        )
    }

    #[test]
    fn origins_follow_ollama_and_ollama_origins() {
        let g = guard("127.0.0.1:11434");
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://[::1]:5173",
            "http://0.0.0.0",
            "app://obsidian.md",
            "vscode-webview://abc",
            "https://app.example.com",
            "http://nas.lan:8080",
            "HTTP://LOCALHOST:1",
        ] {
            assert!(g.origin_allowed(ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "null",
            "",
            "https://app.example.com.evil",
            "http://[::1].evil",
        ] {
            assert!(!g.origin_allowed(bad), "{bad}");
        }
        let all = Guard::new("*", "127.0.0.1:1".parse().unwrap(), None, None, false);
        assert!(all.origin_allowed("http://anything.example"));
    }

    #[test]
    fn hosts_are_checked_only_on_loopback() {
        let g = guard("127.0.0.1:11434");
        for ok in [
            None,
            Some("localhost:11434"),
            Some("127.0.0.1:11434"),
            Some("[::1]:11434"),
            Some("192.168.1.5"),
            Some("10.0.0.2:11434"),
            Some("box.local"),
            Some("ollama.internal:80"),
            Some("app.localhost"),
        ] {
            assert!(g.host_allowed(ok), "{ok:?}");
        }
        for bad in [
            Some("attacker.example:11434"),
            Some("8.8.8.8"),
            Some("localhost.attacker.example"),
            Some("[2001:db8::1]:11434"),
        ] {
            assert!(!g.host_allowed(bad), "{bad:?}");
        }
        assert!(guard("0.0.0.0:11434").host_allowed(Some("ollama.ml.svc:11434")));
    }

    #[test]
    fn keys_protect_writes() {
        let mut h = HeaderMap::new();
        let open = guard("127.0.0.1:1");
        assert!(open.authorize(&h, Scope::Models).is_ok());
        assert!(open.authorize(&h, Scope::Paperless).is_ok());
        // Beyond loopback, Paperless writes need a token unless the operator opened them.
        let lan = guard("0.0.0.0:1");
        assert!(lan.paperless_writes_closed());
        assert_eq!(
            lan.authorize(&h, Scope::Paperless).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(lan.authorize(&h, Scope::Models).is_ok());
        // Uploads too, and nothing opens them but the key.
        assert!(open.authorize(&h, Scope::Uploads).is_ok());
        assert_eq!(
            lan.authorize(&h, Scope::Uploads).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let opened = Guard::new("", "0.0.0.0:1".parse().unwrap(), None, None, true);
        assert!(opened.authorize(&h, Scope::Paperless).is_ok());
        assert!(opened.authorize(&h, Scope::Uploads).is_err());
        let keyed = Guard::new(
            "",
            "0.0.0.0:1".parse().unwrap(),
            Some("k1"),
            Some("w1"),
            false,
        );
        assert_eq!(
            keyed.authorize(&h, Scope::Models).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        for (value, models, paperless) in [
            ("Bearer k1", true, true),
            ("bearer k1", true, true),
            ("Bearer w1", false, true),
            ("Basic k1", false, false),
            ("k1", false, false),
            ("Bearer k12", false, false),
            ("Bearer ", false, false),
        ] {
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(
                keyed.authorize(&h, Scope::Models).is_ok(),
                models,
                "{value}"
            );
            assert_eq!(
                keyed.authorize(&h, Scope::Uploads).is_ok(),
                models,
                "{value}"
            );
            assert_eq!(
                keyed.authorize(&h, Scope::Paperless).is_ok(),
                paperless,
                "{value}"
            );
        }
    }

    #[test]
    fn glob_is_linear_and_exact() {
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
        assert!(glob(b"*", b""));
        let long = "a".repeat(10_000);
        assert!(!glob(b"*a*a*a*a*a*b", long.as_bytes()));
    }
}
