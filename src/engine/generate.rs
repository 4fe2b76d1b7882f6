//! The decode loop: prompt evaluation (reusing a cached prefix), sampling, stop handling and
//! incremental detokenization. Synchronous; the worker thread drives it.

use std::time::{Duration, Instant};

use super::constraint::Constraint;
use super::kv_cache::KvCache;
use super::model::LoadedModel;
use super::sampler::{Sampler, SamplingParams};
use super::EngineError;

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// `None`: until a stop condition or the context is full.
    pub max_tokens: Option<usize>,
    /// Token ids that end generation (EOS, end-of-turn); never emitted as text.
    pub stop_tokens: Vec<u32>,
    /// Strings that end generation; neither they nor any partial match are emitted.
    pub stop_strings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The consumer asked to stop (client went away).
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// A token's log-probability under the model (before temperature, penalties and any
/// grammar), with the most likely alternatives at that position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: Alternative,
    pub top: Vec<Alternative>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub id: u32,
    /// The token's text (lossy where it is part of a UTF-8 sequence) and its bytes.
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// Log-softmax of `logits` for `token` and the `top` most likely tokens.
fn logprob_of(lm: &LoadedModel, logits: &[f32], token: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    let alt = |id: u32| {
        let bytes = lm.tokenizer.token_bytes(id).to_vec();
        Alternative {
            id,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            logprob: logits
                .get(id as usize)
                .map_or(f32::NEG_INFINITY, |l| l - lse),
        }
    };
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let top = top.min(order.len());
    if top > 0 {
        order.select_nth_unstable_by(top - 1, |a, b| {
            logits[*b as usize].total_cmp(&logits[*a as usize])
        });
        order.truncate(top);
        order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    }
    TokenLogprob {
        token: alt(token),
        top: order.into_iter().take(top).map(alt).collect(),
    }
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    /// Generated token ids (without the stop token).
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the cache instead of being evaluated.
    pub cached_tokens: usize,
    pub finish: FinishReason,
    pub prompt_eval: Duration,
    pub eval: Duration,
    /// Grammar statistics when the output was constrained.
    pub constraint: Option<ConstraintStats>,
    /// Per generated token, when the request asked for log-probabilities.
    pub logprobs: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, Default)]
pub struct ConstraintStats {
    /// Tokens appended because the grammar allowed nothing else.
    pub forced: usize,
    /// Time of each full mask computation (only when a sampled token was rejected).
    pub mask_times: Vec<Duration>,
}

/// One sequence's state: its KV cache and the tokens that cache holds.
pub struct Session {
    pub cache: KvCache,
    tokens: Vec<u32>,
}

impl Session {
    pub fn new(cache: KvCache) -> Self {
        Self {
            cache,
            tokens: Vec::new(),
        }
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Keeps the longest cached prefix of `prompt`, but always leaves at least one prompt token
    /// to evaluate (its logits are needed). Returns how many tokens were kept.
    fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        self.tokens.truncate(common);
        self.cache.truncate(common);
        common
    }
}

/// Turns token bytes into text, holding back incomplete UTF-8 sequences.
#[derive(Default)]
pub struct Utf8Stream {
    buf: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.buf.extend_from_slice(bytes);
        match std::str::from_utf8(&self.buf) {
            Ok(s) => {
                let s = s.to_owned();
                self.buf.clear();
                s
            }
            Err(e) if e.error_len().is_none() => {
                // Incomplete tail: emit the valid part, keep the rest for the next token.
                let valid = e.valid_up_to();
                let s = String::from_utf8_lossy(&self.buf[..valid]).into_owned();
                self.buf.drain(..valid);
                s
            }
            Err(_) => String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned(),
        }
    }

    pub fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }
}

/// Holds back text that could be the start of a stop string.
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

impl StopStrings {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds text; returns what may be emitted now and whether a stop string was hit.
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(cut) = self.stops.iter().filter_map(|s| self.pending.find(s)).min() {
            let out = self.pending[..cut].to_owned();
            self.pending.clear();
            return (out, true);
        }
        // The longest suffix of `pending` that is a proper prefix of some stop string stays.
        let keep = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let out = self.pending[..keep].to_owned();
        self.pending.drain(..keep);
        (out, false)
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Runs one generation. `on_text` receives each piece of text as it becomes final and returns
/// `false` to cancel.
pub fn generate(
    lm: &LoadedModel,
    session: &mut Session,
    req: &GenerateRequest,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Completion, EngineError> {
    generate_constrained(lm, session, req, None, on_text)
}

/// Decoded text so far, with stop strings and UTF-8 boundaries handled.
struct Output {
    utf8: Utf8Stream,
    stops: StopStrings,
    text: String,
}

impl Output {
    /// Adds one token's bytes; `Some(reason)` when generation must end.
    fn push(
        &mut self,
        bytes: &[u8],
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Option<FinishReason> {
        let piece = self.utf8.push(bytes);
        let (out, hit) = self.stops.push(&piece);
        if !self.emit(&out, on_text) {
            return Some(FinishReason::Cancelled);
        }
        hit.then_some(FinishReason::Stop)
    }

    fn emit(&mut self, piece: &str, on_text: &mut dyn FnMut(&str) -> bool) -> bool {
        if piece.is_empty() {
            return true;
        }
        self.text.push_str(piece);
        on_text(piece)
    }

    /// Flushes held-back text when generation ended for a reason other than a stop.
    fn flush(&mut self, on_text: &mut dyn FnMut(&str) -> bool) {
        let rest = self.utf8.finish();
        let (mut out, _) = self.stops.push(&rest);
        out.push_str(&self.stops.finish());
        self.emit(&out, on_text);
    }
}

/// One generation in progress, advanced a step at a time, so that a worker can interleave
/// several (`OLLAMA_NUM_PARALLEL`). Each step samples one token or appends the tokens a grammar
/// forces; the sequence's state lives in the [`Session`] passed to every call.
pub struct Generation {
    req: GenerateRequest,
    constraint: Option<Constraint>,
    sampler: Sampler,
    out: Output,
    generated: Vec<u32>,
    logits: candle_core::Tensor,
    stats: ConstraintStats,
    limit: usize,
    cached: usize,
    prompt_eval: Duration,
    decode_start: Instant,
    finish: Option<FinishReason>,
    logprobs: Vec<TokenLogprob>,
    /// How many of `logprobs` [`Generation::take_logprobs`] has handed out.
    logprobs_taken: usize,
}

impl Generation {
    /// Evaluates the prompt (reusing the session's cached prefix).
    pub fn start(
        lm: &LoadedModel,
        session: &mut Session,
        req: GenerateRequest,
        constraint: Option<Constraint>,
    ) -> Result<Self, EngineError> {
        if req.prompt.is_empty() {
            return Err(EngineError::InvalidInput("the prompt is empty".into()));
        }
        let capacity = session.cache.capacity();
        if req.prompt.len() >= capacity {
            return Err(EngineError::ContextOverflow {
                needed: req.prompt.len() + 1,
                limit: capacity,
            });
        }
        let start = Instant::now();
        let cached = session.reuse_prefix(&req.prompt);
        let fresh = &req.prompt[cached..];
        // The last prompt token is evaluated on its own, exactly as when a cached prefix covers
        // everything before it. Matmul rounding depends on the batch size, so otherwise a
        // repeated request (or a streamed one after a non-streamed one) could decode differently
        // at temperature 0 from a fresh run.
        let (body, last) = fresh.split_at(fresh.len() - 1);
        if !body.is_empty() {
            lm.model.forward(body, &mut session.cache)?;
        }
        let logits = match lm.model.forward(last, &mut session.cache) {
            Ok(l) => l,
            Err(e) => {
                session.cache.truncate(cached);
                return Err(e);
            }
        };
        session.tokens.extend_from_slice(fresh);
        Ok(Self {
            sampler: Sampler::new(req.sampling.clone()),
            out: Output {
                utf8: Utf8Stream::default(),
                stops: StopStrings::new(&req.stop_strings),
                text: String::new(),
            },
            limit: req.max_tokens.unwrap_or(usize::MAX),
            req,
            constraint,
            generated: Vec::new(),
            logits,
            stats: ConstraintStats::default(),
            cached,
            prompt_eval: start.elapsed(),
            decode_start: Instant::now(),
            finish: None,
            logprobs: Vec::new(),
            logprobs_taken: 0,
        })
    }

    /// Advances by one step; returns the finish reason once generation has ended.
    pub fn step(
        &mut self,
        lm: &LoadedModel,
        session: &mut Session,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<FinishReason>, EngineError> {
        if self.finish.is_none() {
            self.finish = self.advance(lm, session, on_text)?;
            if self.finish == Some(FinishReason::Length) {
                self.out.flush(on_text);
            }
        }
        Ok(self.finish)
    }

    fn advance(
        &mut self,
        lm: &LoadedModel,
        session: &mut Session,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<FinishReason>, EngineError> {
        if self.generated.len() >= self.limit {
            return Ok(Some(FinishReason::Length));
        }
        let mut step: Vec<u32> = Vec::new();
        let report = self.req.sampling.logprobs;
        if let Some(c) = self.constraint.as_mut() {
            if c.is_finished() {
                return Ok(Some(FinishReason::Stop));
            }
            step = c.forced_tokens();
            // A token's log-probability needs the logits before it: forced tokens go one at a
            // time when they are reported.
            let batch = if report.is_some() { 1 } else { usize::MAX };
            step.truncate((self.limit - self.generated.len()).min(batch));
            self.stats.forced += step.len();
        }
        let raw = match report {
            Some(_) => Some(self.logits.to_vec1::<f32>()?),
            None => None,
        };
        if step.is_empty() {
            let mut l = match &raw {
                Some(r) => r.clone(),
                None => self.logits.to_vec1::<f32>()?,
            };
            let token = match self.constraint.as_mut() {
                None => self.sampler.sample(&mut l, &session.tokens),
                Some(c) => {
                    let first = self.sampler.sample(&mut l.clone(), &session.tokens);
                    if c.allows(first) {
                        first
                    } else {
                        let t = Instant::now();
                        c.mask(&mut l)?;
                        self.stats.mask_times.push(t.elapsed());
                        self.sampler.sample(&mut l, &session.tokens)
                    }
                }
            };
            step.push(token);
        }
        if let Some(c) = self.constraint.as_mut() {
            let body: Vec<u32> = step.iter().copied().filter(|t| *t != c.eos()).collect();
            c.consume(&body)?;
        }
        for &token in &step {
            if self.req.stop_tokens.contains(&token) {
                return Ok(Some(FinishReason::Stop));
            }
            self.generated.push(token);
            if let (Some(top), Some(raw)) = (report, &raw) {
                self.logprobs.push(logprob_of(lm, raw, token, top));
            }
            if let Some(reason) = self.out.push(lm.tokenizer.token_bytes(token), on_text) {
                return Ok(Some(reason));
            }
        }
        if session.cache.len() + step.len() > session.cache.capacity()
            || self.generated.len() >= self.limit
        {
            return Ok(Some(FinishReason::Length));
        }
        self.logits = lm.model.forward(&step, &mut session.cache)?;
        session.tokens.extend_from_slice(&step);
        Ok(None)
    }

    /// Log-probabilities of the tokens generated since the last call.
    pub fn take_logprobs(&mut self) -> Vec<TokenLogprob> {
        let fresh = self.logprobs[self.logprobs_taken..].to_vec();
        self.logprobs_taken = self.logprobs.len();
        fresh
    }

    /// The result; call after `step` returned a finish reason.
    pub fn into_completion(self) -> Completion {
        Completion {
            text: self.out.text,
            tokens: self.generated,
            prompt_tokens: self.req.prompt.len(),
            cached_tokens: self.cached,
            finish: self.finish.unwrap_or(FinishReason::Cancelled),
            prompt_eval: self.prompt_eval,
            eval: self.decode_start.elapsed(),
            constraint: self.constraint.map(|_| self.stats),
            logprobs: self.logprobs,
        }
    }
}

/// [`generate`], with every token checked against `constraint` when one is given: tokens the
/// grammar forces are appended without sampling and evaluated in one batched forward pass;
/// otherwise a token is sampled from the plain logits and the (costly) mask is computed only
/// when the grammar rejects it. Resampling from the masked logits after a rejection draws from
/// exactly the masked distribution, so the shortcut changes speed, not results.
pub fn generate_constrained(
    lm: &LoadedModel,
    session: &mut Session,
    req: &GenerateRequest,
    constraint: Option<Constraint>,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Completion, EngineError> {
    let mut g = Generation::start(lm, session, req.clone(), constraint)?;
    while g.step(lm, session, on_text)?.is_none() {}
    Ok(g.into_completion())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_holds_back_partial_characters() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&[euro[2], b'!']), "€!");
        assert_eq!(s.push(&[0xF0, 0x9F]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_strings_never_leak_partial_matches() {
        let mut s = StopStrings::new(&["</end>".to_string()]);
        assert_eq!(s.push("Hello <"), ("Hello ".to_string(), false));
        assert_eq!(s.push("/en"), (String::new(), false));
        assert_eq!(s.push("d> more"), (String::new(), true));

        let mut s = StopStrings::new(&["</end>".to_string()]);
        assert_eq!(s.push("a <"), ("a ".to_string(), false));
        assert_eq!(s.push("b"), ("<b".to_string(), false));
        assert_eq!(s.push(" <"), (" ".to_string(), false));
        assert_eq!(s.finish(), "<");
    }

    #[test]
    fn earliest_stop_string_wins() {
        let mut s = StopStrings::new(&["world".to_string(), "lo".to_string()]);
        assert_eq!(s.push("hello world"), ("hel".to_string(), true));
    }
}
