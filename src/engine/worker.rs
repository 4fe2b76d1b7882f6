//! The thread that owns one loaded model: weights, the KV cache (whose contents double as the
//! prefix cache) and the tokenizer. Async code never touches tensors; it sends a [`Job`] and
//! reads [`Event`]s back. A closed event channel cancels the job within one token.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::generate::{generate_constrained, GenerateRequest, Session};
use super::model::LoadedModel;
use super::request::{EmbedTask, Event, GenerateTask, Generated, PromptInput};
use super::template::ChatMessage;
use super::EngineError;

pub(crate) enum Task {
    Generate(GenerateTask),
    Embed(EmbedTask),
}

pub(crate) struct Job {
    pub task: Task,
    pub events: UnboundedSender<Event>,
    /// Released when the job ends (queue accounting).
    pub _permit: super::Permit,
}

pub(crate) fn run(lm: LoadedModel, default_ctx: usize, jobs: Receiver<Job>) {
    let mut session: Option<Session> = None;
    for job in jobs {
        if job.events.is_closed() {
            continue; // the client left while queued
        }
        let events = job.events.clone();
        let result = match job.task {
            Task::Generate(t) => run_generate(&lm, &mut session, default_ctx, t, &events),
            Task::Embed(t) => run_embed(&lm, t, &events),
        };
        if let Err(e) = result {
            let _ = events.send(Event::Error(e));
        }
    }
}

/// Prompt tokens for a task, before any fitting to the context.
fn render(lm: &LoadedModel, input: &PromptInput) -> Result<Vec<u32>, EngineError> {
    match input {
        PromptInput::Chat(messages) => lm.chat_prompt(messages),
        PromptInput::Raw(text) => {
            let mut ids: Vec<u32> = lm
                .tokenizer
                .bos
                .filter(|_| lm.tokenizer.add_bos)
                .into_iter()
                .collect();
            ids.extend(lm.tokenizer.encode(text)?);
            Ok(ids)
        }
        PromptInput::Continue { context, messages } => {
            let mut ids = context.clone();
            ids.extend(lm.template.render(messages, true, &lm.tokenizer)?);
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
    budget: usize,
    truncate: bool,
) -> Result<(Vec<u32>, bool), EngineError> {
    let ids = render(lm, input)?;
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
    let ids = render(lm, &cut_input)?;
    if ids.len() > budget {
        return Err(overflow);
    }
    tracing::warn!(
        removed_tokens = excess,
        "prompt longer than the context: cut the middle of the longest user message"
    );
    Ok((ids, true))
}

fn run_generate(
    lm: &LoadedModel,
    session: &mut Option<Session>,
    default_ctx: usize,
    t: GenerateTask,
    events: &UnboundedSender<Event>,
) -> Result<(), EngineError> {
    let num_ctx = t
        .num_ctx
        .unwrap_or(default_ctx)
        .clamp(16, lm.model.config().max_positions);
    // Keep the cached KV state (the prefix cache) unless the context size changes.
    if session
        .as_ref()
        .is_none_or(|s| s.cache.capacity() != num_ctx)
    {
        *session = None;
        *session = Some(Session::new(lm.model.new_cache(num_ctx)?));
    }
    let session = session.as_mut().expect("session exists");
    // Leave room to answer: what was asked for, within reason.
    let reserve = t.num_predict.unwrap_or(256).clamp(1, num_ctx / 4);
    let (prompt, truncated) = fit_prompt(lm, &t.input, num_ctx - reserve, t.truncate)?;
    let max_tokens = t
        .num_predict
        .unwrap_or(usize::MAX)
        .min(num_ctx - prompt.len());
    let req = GenerateRequest {
        prompt: prompt.clone(),
        sampling: t.sampling,
        max_tokens: Some(max_tokens),
        stop_tokens: lm.stop_tokens(),
        stop_strings: t.stop,
    };
    let mut constraint = match &t.format {
        Some(f) => Some(lm.constraints()?.matcher(f)?),
        None => None,
    };
    let start = Instant::now();
    let done = generate_constrained(lm, session, &req, constraint.as_mut(), &mut |text| {
        events.send(Event::Text(text.to_owned())).is_ok()
    })?;
    let mut context = prompt;
    context.extend_from_slice(&done.tokens);
    let _ = events.send(Event::Done(Generated {
        completion: done,
        context,
        truncated,
        total: start.elapsed(),
    }));
    Ok(())
}

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
    let mut cache = lm.model.new_cache(limit)?;
    let mut vectors = Vec::with_capacity(t.inputs.len());
    let mut prompt_tokens = 0;
    for text in &t.inputs {
        let mut ids = lm.tokenizer.encode(text)?;
        if ids.is_empty() {
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
        prompt_tokens += ids.len();
        cache.clear();
        let v: Vec<f32> = lm.model.embed(&ids, &mut cache)?.to_vec1()?;
        vectors.push(normalize(v, t.dimensions));
        if events.is_closed() {
            return Ok(());
        }
    }
    let _ = events.send(Event::Embeddings {
        vectors,
        prompt_tokens,
    });
    Ok(())
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
