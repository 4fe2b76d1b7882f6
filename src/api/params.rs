//! Parsing of request parameters shared by the Ollama and OpenAI routes: the request body,
//! Ollama's `options` map, `keep_alive` durations and timestamps.

use axum::body::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::duration::{from_seconds, parse_go_duration, MAX_SECONDS};
use crate::engine::{KeepAlive, SamplingParams};

/// Parses a JSON body with Ollama's messages for the empty and the malformed case.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
}

/// Ollama's runtime options, typed. `None` = not given.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Options {
    pub num_ctx: Option<usize>,
    /// Negative means "no limit".
    pub num_predict: Option<i64>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    /// Negative means "random".
    pub seed: Option<i64>,
    pub stop: Option<Vec<String>>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<usize>,
    pub num_thread: Option<usize>,
}

const INT_KEYS: &[&str] = &[
    "num_ctx",
    "num_predict",
    "top_k",
    "seed",
    "repeat_last_n",
    "num_thread",
    "num_keep",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "draft_num_predict",
];
const FLOAT_KEYS: &[&str] = &[
    "temperature",
    "top_p",
    "min_p",
    "repeat_penalty",
    "typical_p",
    "presence_penalty",
    "frequency_penalty",
];
const BOOL_KEYS: &[&str] = &[
    "use_mmap",
    "numa",
    "penalize_newline",
    "low_vram",
    "vocab_only",
];

impl Options {
    /// Wrong types are errors (as in Ollama's `FromMap`); unknown keys are logged and ignored.
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ApiError> {
        let mut o = Options::default();
        for (key, value) in map {
            if value.is_null() {
                continue;
            }
            let k = key.as_str();
            if INT_KEYS.contains(&k) {
                let n = value
                    .as_f64()
                    .filter(|f| f.fract() == 0.0)
                    .ok_or_else(|| type_error(k, "integer"))? as i64;
                let non_negative = || usize::try_from(n).map_err(|_| range_error(k));
                match k {
                    "num_ctx" => o.num_ctx = Some(non_negative()?),
                    "num_predict" => o.num_predict = Some(n),
                    "top_k" => o.top_k = Some(non_negative()?),
                    "seed" => o.seed = Some(n),
                    "repeat_last_n" => o.repeat_last_n = Some(n.max(-1) as usize),
                    "num_thread" => o.num_thread = Some(non_negative()?),
                    _ => {}
                }
            } else if FLOAT_KEYS.contains(&k) {
                let f = value.as_f64().ok_or_else(|| type_error(k, "float"))? as f32;
                match k {
                    "temperature" => o.temperature = Some(f),
                    "top_p" => o.top_p = Some(f),
                    "min_p" => o.min_p = Some(f),
                    "repeat_penalty" => o.repeat_penalty = Some(f),
                    _ => tracing::debug!(option = k, "option accepted but has no effect"),
                }
            } else if BOOL_KEYS.contains(&k) {
                value.as_bool().ok_or_else(|| type_error(k, "boolean"))?;
            } else if k == "stop" {
                let list = match value {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| type_error(k, "array of strings"))?,
                    _ => return Err(type_error(k, "array of strings")),
                };
                o.stop = Some(list);
            } else {
                tracing::warn!(option = k, "invalid option provided: ignored");
            }
        }
        Ok(o)
    }

    pub fn sampling(&self) -> SamplingParams {
        let d = SamplingParams::default();
        SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            repeat_last_n: self.repeat_last_n.unwrap_or(d.repeat_last_n),
            seed: self.seed.filter(|s| *s >= 0).map(|s| s as u64),
            logprobs: None,
        }
    }

    /// `num_predict` as a token limit (`None`: unlimited).
    pub fn max_tokens(&self) -> Option<usize> {
        self.num_predict.filter(|n| *n >= 0).map(|n| n as usize)
    }
}

fn type_error(key: &str, ty: &str) -> ApiError {
    ApiError::bad_request(format!("option \"{key}\" must be of type {ty}"))
}

fn range_error(key: &str) -> ApiError {
    ApiError::bad_request(format!("option \"{key}\" must not be negative"))
}

/// Ollama's `keep_alive`: a number of seconds or a Go duration string; negative = forever.
/// A number past Go's duration range also means "as long as possible", as in Ollama; a string
/// past it, NaN or infinity is a 400.
pub fn keep_alive(value: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    let secs = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0).min(MAX_SECONDS),
        Some(Value::String(s)) => parse_go_duration(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "time: invalid duration \"{}\"",
                s.chars().take(64).collect::<String>()
            ))
        })?,
        Some(_) => return Err(ApiError::bad_request("Unsupported type")),
    };
    if secs < 0.0 {
        return Ok(Some(KeepAlive::Forever));
    }
    from_seconds(secs)
        .map(|d| Some(KeepAlive::For(d)))
        .ok_or_else(|| ApiError::bad_request("keep_alive is not a valid duration"))
}

/// RFC 3339 in UTC with fractional seconds, as Go prints `time.Now().UTC()`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn keep_alive_forms() {
        assert_eq!(keep_alive(None).unwrap(), None);
        assert_eq!(
            keep_alive(Some(&json!(0))).unwrap(),
            Some(KeepAlive::For(Duration::ZERO))
        );
        assert_eq!(
            keep_alive(Some(&json!(-1))).unwrap(),
            Some(KeepAlive::Forever)
        );
        assert_eq!(
            keep_alive(Some(&json!("10m"))).unwrap(),
            Some(KeepAlive::For(Duration::from_secs(600)))
        );
        assert_eq!(
            keep_alive(Some(&json!(true))).unwrap_err().message,
            "Unsupported type"
        );
        assert!(keep_alive(Some(&json!("soon"))).is_err());
        // Crafted values are answers, not panics.
        assert_eq!(
            keep_alive(Some(&json!(1e30))).unwrap(),
            Some(KeepAlive::For(Duration::from_secs_f64(MAX_SECONDS)))
        );
        for bad in ["NaN", "inf", "99999999999h", "1e30"] {
            assert!(keep_alive(Some(&json!(bad))).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_are_typed_and_unknown_keys_ignored() {
        let o = Options::parse(
            json!({"num_ctx": 2048, "temperature": 0, "stop": ["a", "b"], "seed": -1,
                   "num_predict": -1, "mirostat": 2, "top_k": 7.0})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(o.num_ctx, Some(2048));
        assert_eq!(o.temperature, Some(0.0));
        assert_eq!(o.stop, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(o.max_tokens(), None);
        assert_eq!(o.sampling().seed, None);
        assert_eq!(o.top_k, Some(7));
        let err = Options::parse(json!({"num_ctx": "big"}).as_object().unwrap()).unwrap_err();
        assert_eq!(err.message, "option \"num_ctx\" must be of type integer");
        let err = Options::parse(json!({"temperature": "hot"}).as_object().unwrap()).unwrap_err();
        assert_eq!(err.message, "option \"temperature\" must be of type float");
        assert!(Options::parse(json!({"num_ctx": 1.5}).as_object().unwrap()).is_err());
        assert!(Options::parse(json!({"stop": [1]}).as_object().unwrap()).is_err());
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let t = std::time::UNIX_EPOCH + Duration::from_micros(1_691_176_965_499_127);
        assert_eq!(rfc3339(t), "2023-08-04T19:22:45.499127Z");
    }
}
