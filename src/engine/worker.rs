//! The thread that owns one loaded model: weights, the KV cache (whose contents double as the
//! prefix cache) and the tokenizer. Async code never touches tensors; it sends a [`Job`] and
//! reads [`Event`]s back. A closed event channel cancels the job within one token.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::constraint::Constraint;
use super::generate::{Completion, FinishReason, GenerateRequest, Generation, Session};
use super::model::{LoadedModel, ModelKind};
use super::request::{EmbedTask, Event, GenerateTask, Generated, PromptInput};
use super::template::{render_go_template, ChatMessage};
use super::tools::{CallSplitter, Tool};
use super::EngineError;
use crate::metrics::{EngineMetrics, GenerationLabels, ModelLabels};

pub(crate) enum Task {
    /// With its format compiled at admission.
    Generate(Box<GenerateTask>, Option<Box<Constraint>>),
    Embed(EmbedTask),
}

pub(crate) struct Job {
    pub task: Task,
    pub events: UnboundedSender<Event>,
    /// When the engine admitted it: time to first token counts the queue wait.
    pub admitted: Instant,
    /// Released when the job ends (queue accounting).
    pub _permit: super::Permit,
}

/// A generation in progress in one of the worker's slots.
struct Active {
    generation: Generation,
    session: Session,
    events: UnboundedSender<Event>,
    prompt: Vec<u32>,
    truncated: bool,
    started: Instant,
    admitted: Instant,
    last_token: Option<Instant>,
    /// Separates text from tool calls when the request offered tools.
    calls: Option<CallSplitter>,
    _permit: super::Permit,
}

/// What a worker reports to, and under which model name.
pub(crate) struct Telemetry {
    pub metrics: Option<EngineMetrics>,
    pub model: String,
}

impl Telemetry {
    fn token(&self, admitted: Instant, last: &mut Option<Instant>) {
        let now = Instant::now();
        if let Some(m) = &self.metrics {
            match *last {
                None => m
                    .time_to_first_token
                    .observe((now - admitted).as_secs_f64()),
                Some(t) => m.inter_token.observe((now - t).as_secs_f64()),
            }
        }
        *last = Some(now);
    }

    fn finished(&self, outcome: &str, done: Option<&Completion>) {
        let Some(m) = &self.metrics else { return };
        let model = ModelLabels {
            model: self.model.clone(),
        };
        m.running.dec();
        m.generations
            .get_or_create(&GenerationLabels {
                model: self.model.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
        let Some(c) = done else { return };
        m.prompt_tokens
            .get_or_create(&model)
            .inc_by(c.prompt_tokens as u64);
        m.cached_prompt_tokens
            .get_or_create(&model)
            .inc_by(c.cached_tokens as u64);
        m.generated_tokens
            .get_or_create(&model)
            .inc_by(c.tokens.len() as u64);
        let evaluated = c.prompt_tokens.saturating_sub(c.cached_tokens);
        if evaluated > 0 && !c.prompt_eval.is_zero() {
            m.prefill_tokens_per_second
                .get_or_create(&model)
                .set(evaluated as f64 / c.prompt_eval.as_secs_f64());
        }
        if !c.tokens.is_empty() && !c.eval.is_zero() {
            m.decode_tokens_per_second
                .get_or_create(&model)
                .set(c.tokens.len() as f64 / c.eval.as_secs_f64());
        }
        if let Some(stats) = &c.constraint {
            m.constraint_forced_tokens.inc_by(stats.forced as u64);
            for t in &stats.mask_times {
                m.constraint_mask_seconds.observe(t.as_secs_f64());
            }
        }
    }
}

/// Serves jobs until the engine drops the sender. Up to `slots` generations run interleaved a
/// token at a time (each with its own KV cache); embeddings run between steps. Finished
/// sessions go back to a pool and keep their KV state, so the next request that shares a
/// prefix with one of them (chat history, the classifier's instructions) skips that prefix.
pub(crate) fn run(
    lm: LoadedModel,
    default_ctx: usize,
    slots: usize,
    jobs: Receiver<Job>,
    telemetry: Telemetry,
) {
    let slots = slots.max(1);
    let mut pool: Vec<Session> = Vec::new();
    let mut active: Vec<Active> = Vec::new();
    loop {
        // Admit new work: block only when idle.
        while active.len() < slots {
            let job = if active.is_empty() {
                match jobs.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            if job.events.is_closed() {
                continue; // the client left while queued
            }
            match job.task {
                Task::Embed(t) => {
                    if let Err(e) = run_embed(&lm, t, &job.events) {
                        let _ = job.events.send(Event::Error(e));
                    }
                }
                Task::Generate(t, constraint) => {
                    let calls = t
                        .tools
                        .as_ref()
                        .and_then(|_| lm.card.template.tool_syntax())
                        .map(CallSplitter::new);
                    match start_generate(&lm, &mut pool, default_ctx, *t, constraint.map(|c| *c)) {
                        Ok((generation, session, prompt, truncated)) => {
                            if let Some(m) = &telemetry.metrics {
                                m.running.inc();
                            }
                            active.push(Active {
                                generation,
                                session,
                                events: job.events,
                                prompt,
                                truncated,
                                started: Instant::now(),
                                admitted: job.admitted,
                                last_token: None,
                                calls,
                                _permit: job._permit,
                            })
                        }
                        Err(e) => {
                            let _ = job.events.send(Event::Error(e));
                        }
                    }
                }
            }
        }
        // One step of every running generation, round robin.
        let mut i = 0;
        while i < active.len() {
            let a = &mut active[i];
            let events = a.events.clone();
            let (admitted, last, calls) = (a.admitted, &mut a.last_token, &mut a.calls);
            let mut text = String::new();
            let step = a.generation.step(&lm, &mut a.session, &mut |piece| {
                telemetry.token(admitted, last);
                match calls {
                    Some(c) => text.push_str(&c.push(piece)),
                    None => text.push_str(piece),
                }
                !events.is_closed()
            });
            // A step's log-probabilities go just before its text, so they ride on its chunk.
            let logprobs = a.generation.take_logprobs();
            if !logprobs.is_empty() {
                let _ = events.send(Event::Logprobs(logprobs));
            }
            if !text.is_empty() {
                let _ = events.send(Event::Text(text));
            }
            match step {
                Ok(None) => i += 1,
                Ok(Some(_)) | Err(_) => {
                    let a = active.swap_remove(i);
                    finish(a, step.err(), &mut pool, &telemetry);
                }
            }
        }
    }
}

fn finish(a: Active, error: Option<EngineError>, pool: &mut Vec<Session>, t: &Telemetry) {
    if let Some(e) = error {
        t.finished(
            if a.events.is_closed() {
                "cancelled"
            } else {
                "error"
            },
            None,
        );
        let _ = a.events.send(Event::Error(e));
        // The cache may hold half-written positions: do not reuse it.
        drop(a.session);
        return;
    }
    let done = a.generation.into_completion();
    let outcome = if a.events.is_closed() {
        FinishReason::Cancelled
    } else {
        done.finish
    };
    t.finished(outcome.as_str(), Some(&done));
    let (rest, tool_calls) = match a.calls {
        Some(c) => c.finish(),
        None => (String::new(), Vec::new()),
    };
    if !rest.is_empty() {
        let _ = a.events.send(Event::Text(rest));
    }
    let mut context = a.prompt;
    context.extend_from_slice(&done.tokens);
    let _ = a.events.send(Event::Done(Generated {
        completion: done,
        context,
        truncated: a.truncated,
        total: a.started.elapsed(),
        tool_calls,
    }));
    pool.push(a.session);
}

/// Prompt tokens for a task, before any fitting to the context.
fn render(lm: &LoadedModel, input: &PromptInput, tools: &[Tool]) -> Result<Vec<u32>, EngineError> {
    let template = &lm.card.template;
    match input {
        PromptInput::Chat(messages) => {
            template.render_with_tools(messages, tools, true, &lm.tokenizer)
        }
        PromptInput::Raw(text) => lm.raw_prompt(text),
        PromptInput::Continue { context, messages } => {
            let mut ids = context.clone();
            ids.extend(template.render_with_tools(messages, tools, true, &lm.tokenizer)?);
            Ok(ids)
        }
        PromptInput::Template {
            template,
            system,
            prompt,
            context,
        } => {
            let mut ids = context.clone();
            ids.extend(render_go_template(template, system, prompt, &lm.tokenizer)?);
            Ok(ids)
        }
    }
}

/// Makes the prompt fit `budget` tokens without touching the instructions: the middle of the
/// longest user message is cut out (the head and tail of a document carry most of its
/// meaning: letterhead, sender, date, totals, signature).
fn fit_prompt(
    lm: &LoadedModel,
    input: &PromptInput,
    tools: &[Tool],
    budget: usize,
    truncate: bool,
) -> Result<(Vec<u32>, bool), EngineError> {
    let ids = render(lm, input, tools)?;
    if ids.len() <= budget {
        return Ok((ids, false));
    }
    let overflow = EngineError::ContextOverflow {
        needed: ids.len(),
        limit: budget,
    };
    let messages = match input {
        PromptInput::Chat(m) | PromptInput::Continue { messages: m, .. } if truncate => m,
        _ => return Err(overflow),
    };
    let Some(longest) = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == "user")
        .max_by_key(|(_, m)| m.content.len())
        .map(|(i, _)| i)
    else {
        return Err(overflow);
    };
    let content = lm.tokenizer.encode(&messages[longest].content)?;
    let marker = "\n[…]\n";
    let excess = ids.len() - budget + lm.tokenizer.encode(marker)?.len() + 2;
    if excess >= content.len() {
        return Err(overflow);
    }
    let keep = content.len() - excess;
    let head = lm.tokenizer.decode(&content[..keep / 2]);
    let tail = lm
        .tokenizer
        .decode(&content[content.len() - (keep - keep / 2)..]);
    let mut cut: Vec<ChatMessage> = messages.clone();
    cut[longest].content = format!("{head}{marker}{tail}");
    let cut_input = match input {
        PromptInput::Continue { context, .. } => PromptInput::Continue {
            context: context.clone(),
            messages: cut,
        },
        _ => PromptInput::Chat(cut),
    };
    let ids = render(lm, &cut_input, tools)?;
    if ids.len() > budget {
        return Err(overflow);
    }
    tracing::warn!(
        removed_tokens = excess,
        "prompt longer than the context: cut the middle of the longest user message"
    );
    Ok((ids, true))
}

/// A session for `prompt` from the pool: the one sharing the longest prefix, else a new one.
/// Caches of another context size are dropped. Sessions are either running or pooled, and a
/// new one is made only when the pool has none, so there are never more than `slots`.
fn take_session(
    lm: &LoadedModel,
    pool: &mut Vec<Session>,
    num_ctx: usize,
    prompt: &[u32],
) -> Result<Session, EngineError> {
    pool.retain(|s| s.cache.capacity() == num_ctx);
    let shared = |s: &Session| {
        s.tokens()
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    };
    let best = pool
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| shared(s))
        .map(|(i, _)| i);
    match best {
        Some(i) => Ok(pool.swap_remove(i)),
        None => Ok(Session::new(lm.model.new_cache(num_ctx)?)),
    }
}

type Started = (Generation, Session, Vec<u32>, bool);

fn start_generate(
    lm: &LoadedModel,
    pool: &mut Vec<Session>,
    default_ctx: usize,
    t: GenerateTask,
    constraint: Option<Constraint>,
) -> Result<Started, EngineError> {
    let num_ctx = t
        .num_ctx
        .unwrap_or(default_ctx)
        .clamp(16, lm.model.config().max_positions);
    // Leave room to answer: what was asked for, within reason.
    let reserve = t.num_predict.unwrap_or(256).clamp(1, num_ctx / 4);
    let tools = t
        .tools
        .as_ref()
        .map(|u| u.tools.as_slice())
        .unwrap_or_default();
    let (prompt, truncated) = fit_prompt(lm, &t.input, tools, num_ctx - reserve, t.truncate)?;
    let mut session = take_session(lm, pool, num_ctx, &prompt)?;
    let req = GenerateRequest {
        prompt: prompt.clone(),
        sampling: t.sampling,
        max_tokens: Some(
            t.num_predict
                .unwrap_or(usize::MAX)
                .min(num_ctx - prompt.len()),
        ),
        stop_tokens: lm.stop_tokens(),
        stop_strings: t.stop,
    };
    match Generation::start(lm, &mut session, req, constraint) {
        Ok(g) => Ok((g, session, prompt, truncated)),
        Err(e) => {
            // Prompt evaluation failed before committing any position: the cache is intact.
            pool.push(session);
            Err(e)
        }
    }
}

const EMBED_BATCH: usize = 32;

fn run_embed(
    lm: &LoadedModel,
    t: EmbedTask,
    events: &UnboundedSender<Event>,
) -> Result<(), EngineError> {
    let limit = lm
        .model
        .config()
        .max_positions
        .min(t.num_ctx.unwrap_or(usize::MAX));
    let mut inputs = Vec::with_capacity(t.inputs.len());
    // Text past what the context keeps is not tokenized: no token covers more than
    // MAX_TOKEN_BYTES bytes, so the cut cannot change the tokens that are kept.
    let keep_bytes = limit.saturating_mul(MAX_TOKEN_BYTES);
    for text in &t.inputs {
        let text = if t.truncate {
            head_bytes(text, keep_bytes)
        } else {
            text
        };
        let mut ids = lm.tokenizer.encode(text)?;
        if ids.is_empty() && lm.card.info.kind == ModelKind::Generative {
            ids.extend(lm.tokenizer.bos.or(lm.tokenizer.eos));
        }
        if ids.len() > limit {
            if !t.truncate {
                return Err(EngineError::InvalidInput(
                    "the input length exceeds the context length".into(),
                ));
            }
            ids.truncate(limit);
        }
        inputs.push(ids);
    }
    let prompt_tokens = inputs.iter().map(Vec::len).sum();
    let mut vectors = Vec::with_capacity(inputs.len());
    // Batches bound the attention scores' memory (batch x heads x seq^2) of a long list.
    for chunk in inputs.chunks(EMBED_BATCH) {
        for v in lm.model.embed_batch(chunk)? {
            vectors.push(normalize(v, t.dimensions));
        }
        if events.is_closed() {
            return Ok(());
        }
    }
    let _ = events.send(Event::Embeddings {
        vectors,
        prompt_tokens,
    });
    if t.inputs.len() > EMBED_BATCH {
        super::device::release_freed_memory();
    }
    Ok(())
}

/// Longest text one token stands for, with a margin (vocabularies top out near 64).
const MAX_TOKEN_BYTES: usize = 128;

/// The first `max` bytes of `text`, cut at a character boundary.
fn head_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Optional truncation to `dims` (Matryoshka-style), then L2 normalisation.
fn normalize(mut v: Vec<f32>, dims: Option<usize>) -> Vec<f32> {
    if let Some(d) = dims.filter(|d| *d > 0) {
        v.truncate(d);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
