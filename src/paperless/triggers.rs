//! What triggers hand us, parsed: the polling interval (Paperless-AI's cron form among others)
//! and the document id in a webhook body, however a Paperless workflow was set up to send it.

use std::time::Duration;

/// A SCAN_INTERVAL we cannot read.
#[derive(Debug, thiserror::Error)]
#[error(
    "SCAN_INTERVAL '{0}': use seconds (300), a duration (5m, 1h), a cron step \
     ('*/30 * * * *' or '0 * * * *'), or 0 to turn polling off"
)]
pub struct BadScanInterval(pub String);

/// Paperless-AI's SCAN_INTERVAL is a cron expression (`*/30 * * * *`); a plain number of
/// seconds or a Go-style duration (`90s`, `5m`, `1h`) works too; `0`/`off` disables polling.
pub fn parse_scan_interval(s: &str) -> Result<Option<Duration>, BadScanInterval> {
    let s = s.trim();
    if s.is_empty() || s == "0" || s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("no") {
        return Ok(None);
    }
    let bad = || BadScanInterval(s.to_owned());
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() == 5 {
        // Only the forms that mean "every N minutes/hours" have a fixed interval.
        let rest_star = |from: usize| fields[from..].iter().all(|f| *f == "*");
        if let Some(n) = fields[0].strip_prefix("*/") {
            if rest_star(1) {
                let n: u64 = n.parse().map_err(|_| bad())?;
                return Ok(Some(Duration::from_secs(n.max(1) * 60)));
            }
        }
        if fields[0].parse::<u64>().is_ok() {
            if fields[1] == "*" && rest_star(2) {
                return Ok(Some(Duration::from_secs(3600)));
            }
            if let Some(h) = fields[1].strip_prefix("*/") {
                if rest_star(2) {
                    let h: u64 = h.parse().map_err(|_| bad())?;
                    return Ok(Some(Duration::from_secs(h.max(1) * 3600)));
                }
            }
        }
        if fields[0] == "*" && rest_star(1) {
            return Ok(Some(Duration::from_secs(60)));
        }
        return Err(bad());
    }
    let secs = crate::duration::parse_go_duration(s).ok_or_else(bad)?;
    if secs <= 0.0 {
        return Ok(None);
    }
    crate::duration::from_seconds(secs)
        .map(Some)
        .ok_or_else(bad)
}

/// The document id in a webhook body, however the workflow was configured: JSON (`doc_id`,
/// `document_id` or `id`, as a number or a string, or a `doc_url`), form fields, multipart
/// parts (`include_document`), or a bare number.
pub async fn webhook_document_id(content_type: &str, body: &[u8]) -> Option<i64> {
    let fields = if content_type.starts_with("multipart/form-data") {
        multipart_fields(content_type, body).await
    } else {
        text_fields(body)
    };
    document_id_in(&fields)
}

/// The fields of a JSON, form-encoded or bare-number body.
fn text_fields(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim()) {
        match v {
            serde_json::Value::Object(m) => m
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            // Paperless's "send as JSON" with a text body JSON-encodes that text again: the
            // body is a JSON string holding the JSON (or form) the user wrote.
            serde_json::Value::String(inner) => text_fields(inner.as_bytes()),
            other => vec![("id".into(), other.to_string())],
        }
    } else {
        form_urlencoded::parse(text.trim().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

fn document_id_in(fields: &[(String, String)]) -> Option<i64> {
    for key in ["document_id", "doc_id", "id", "document"] {
        if let Some((_, v)) = fields.iter().find(|(k, _)| k == key) {
            if let Ok(id) = v.trim().parse::<i64>() {
                return (id > 0).then_some(id);
            }
        }
    }
    for key in ["doc_url", "document_url", "url"] {
        if let Some((_, v)) = fields.iter().find(|(k, _)| k == key) {
            if let Some(id) = id_in_url(v) {
                return Some(id);
            }
        }
    }
    None
}

/// `http://paperless/documents/8/` or `/api/documents/8/details` → 8.
fn id_in_url(url: &str) -> Option<i64> {
    let mut parts = url.split('/');
    parts.find(|p| *p == "documents")?;
    parts.next()?.parse().ok().filter(|id| *id > 0)
}

/// The text parts of a multipart body (file parts are skipped); a malformed body yields the
/// parts read before the error.
async fn multipart_fields(content_type: &str, body: &[u8]) -> Vec<(String, String)> {
    let Ok(boundary) = multer::parse_boundary(content_type) else {
        return vec![];
    };
    let body = axum::body::Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Ok(Some(field)) = parts.next_field().await {
        if field.file_name().is_some() {
            continue;
        }
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        match field.text().await {
            Ok(value) => fields.push((name, value)),
            Err(_) => break,
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_interval_forms() {
        let m = |n| Some(Duration::from_secs(n));
        assert_eq!(parse_scan_interval("*/30 * * * *").unwrap(), m(1800));
        assert_eq!(parse_scan_interval("0 * * * *").unwrap(), m(3600));
        assert_eq!(parse_scan_interval("0 */2 * * *").unwrap(), m(7200));
        assert_eq!(parse_scan_interval("300").unwrap(), m(300));
        assert_eq!(parse_scan_interval("5m").unwrap(), m(300));
        assert_eq!(parse_scan_interval("0").unwrap(), None);
        assert_eq!(parse_scan_interval("off").unwrap(), None);
        assert!(parse_scan_interval("15 3 * * 1").is_err());
        assert!(parse_scan_interval("soon").is_err());
    }

    #[test]
    fn webhook_ids_in_every_shape_paperless_sends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let webhook_document_id =
            |ct: &str, body: &[u8]| rt.block_on(super::webhook_document_id(ct, body));
        let json = "application/json";
        assert_eq!(
            webhook_document_id(json, br#"{"document_id": "8"}"#),
            Some(8)
        );
        assert_eq!(webhook_document_id(json, br#"{"doc_id": 12}"#), Some(12));
        assert_eq!(webhook_document_id("", br#"{"document_id": 7}"#), Some(7));
        assert_eq!(
            webhook_document_id(
                json,
                br#"{"doc_url": "http://127.0.0.1:8000/documents/9/", "doc_id": ""}"#
            ),
            Some(9)
        );
        assert_eq!(
            webhook_document_id(
                "application/x-www-form-urlencoded",
                b"title=Water+bill&document_id=5"
            ),
            Some(5)
        );
        let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"document_id\"\r\n\r\n\
            4\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
            \r\n123\r\n--XyZ--\r\n";
        assert_eq!(
            webhook_document_id("multipart/form-data; boundary=XyZ", multipart.as_bytes()),
            Some(4)
        );
        assert_eq!(webhook_document_id("text/plain", b"42"), Some(42));
        // What Paperless 3.0.5 sends for "as JSON" with the body {"document_id": "{{ doc_id }}"}
        // (recorded from its celery task against a real workflow).
        assert_eq!(
            webhook_document_id(json, br#""{\"document_id\": \"102\"}""#),
            Some(102)
        );
        assert_eq!(webhook_document_id(json, br#""42""#), Some(42));
        assert_eq!(webhook_document_id(json, br#""doc_id=9""#), Some(9));
        assert_eq!(webhook_document_id(json, br#"{"document_id": ""}"#), None);
        assert_eq!(webhook_document_id(json, br#"{"title": "x"}"#), None);
    }
}
