//! Token log-probabilities in the three wire shapes: Ollama's (`logprobs` beside each chunk),
//! OpenAI chat's (`choices[].logprobs.content`) and OpenAI legacy completions'
//! (`tokens` / `token_logprobs` / `top_logprobs` / `text_offset`).

use serde_json::{json, Map, Value};

use super::error::ApiError;
use crate::engine::{Alternative, TokenLogprob};

/// Most alternatives per token, as both APIs allow.
pub const MAX_TOP_LOGPROBS: i64 = 20;

/// `top_logprobs` checked; `None` when log-probabilities are not asked for.
pub fn requested(logprobs: bool, top: Option<i64>) -> Result<Option<usize>, ApiError> {
    let top = top.unwrap_or(0);
    if !(0..=MAX_TOP_LOGPROBS).contains(&top) {
        return Err(ApiError::bad_request(format!(
            "top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"
        )));
    }
    Ok((logprobs || top > 0).then_some(top as usize))
}

fn alternative(a: &Alternative) -> Value {
    json!({"token": a.text, "logprob": a.logprob, "bytes": a.bytes})
}

/// `[{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]`: Ollama's
/// `logprobs` and OpenAI chat's `logprobs.content` are the same list.
pub fn token_list(lp: &[TokenLogprob]) -> Value {
    lp.iter()
        .map(|t| {
            let mut v = alternative(&t.token);
            v["top_logprobs"] = t.top.iter().map(alternative).collect();
            v
        })
        .collect()
}

/// OpenAI legacy completions' parallel lists; `offset` is where this piece starts in the text.
pub fn legacy(lp: &[TokenLogprob], offset: usize) -> Value {
    let mut at = offset;
    let mut offsets = Vec::with_capacity(lp.len());
    for t in lp {
        offsets.push(at);
        at += t.token.text.len();
    }
    let top: Vec<Value> = lp
        .iter()
        .map(|t| {
            let m: Map<String, Value> = t
                .top
                .iter()
                .map(|a| (a.text.clone(), json!(a.logprob)))
                .collect();
            Value::Object(m)
        })
        .collect();
    json!({
        "tokens": lp.iter().map(|t| t.token.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": lp.iter().map(|t| t.token.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": offsets,
    })
}
