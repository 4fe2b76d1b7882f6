#!/usr/bin/env node
// Drive a running candlelight server with the official `ollama` npm client.
//
// Usage: node tests/clients/ollama_npm_check.mjs http://127.0.0.1:PORT MODEL
// (run `npm ci` in tests/clients first).
//
// Runs every check in order (a failing check does not stop the others), prints
// "ok <name>" per passed check, the error per failed one, and finishes with the
// line "N passed, M failed". Exit status 0 only if nothing failed.
//
// Environment: CANDLELIGHT_CLIENT_TIMEOUT (seconds per check, default 300).

import { createRequire } from 'node:module'
import { Ollama } from 'ollama'

if (process.argv.length !== 4) {
  console.error(`usage: node ${process.argv[1]} URL MODEL`)
  process.exit(2)
}

const URL_ARG = process.argv[2].replace(/\/+$/, '')
const MODEL = process.argv[3]
const TIMEOUT_MS = Number(process.env.CANDLELIGHT_CLIENT_TIMEOUT ?? '300') * 1000
const UNKNOWN_MODEL = 'nosuch-model:7b'

const ollama = new Ollama({ host: URL_ARG })

const GEN_PROMPT = 'Why is the sky blue?'
const GEN_OPTS = { temperature: 0, seed: 42, num_predict: 16 }
const CHAT_MSGS = [{ role: 'user', content: 'Say hello.' }]
const CHAT_OPTS = { temperature: 0, seed: 42, num_predict: 24 }

const state = {}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`)
}

const normName = (n) => {
  if (n == null) return n
  const last = n.split('/').pop()
  return last.includes(':') ? n : `${n}:latest`
}
const sameModel = (a, b) => normName(a) === normName(b)
const j = (v) => JSON.stringify(v)

async function collect(iter) {
  const parts = []
  for await (const part of iter) parts.push(part)
  return parts
}

async function checkGenerate() {
  const r = await ollama.generate({ model: MODEL, prompt: GEN_PROMPT, options: GEN_OPTS })
  assert(typeof r.response === 'string' && r.response.length > 0, `response should be a non-empty string, got ${j(r.response)}`)
  assert(r.done === true, `done should be true, got ${j(r.done)}`)
  assert(['stop', 'length'].includes(r.done_reason), `done_reason should be stop/length, got ${j(r.done_reason)}`)
  assert(Number.isInteger(r.eval_count) && r.eval_count > 0, `eval_count=${j(r.eval_count)}`)
  assert(Number.isInteger(r.prompt_eval_count) && r.prompt_eval_count > 0, `prompt_eval_count=${j(r.prompt_eval_count)}`)
  assert(Number.isInteger(r.eval_duration) && r.eval_duration > 1000, `eval_duration should be > 1000 ns, got ${j(r.eval_duration)}`)
  assert(Number.isInteger(r.total_duration) && r.total_duration >= r.eval_duration, `total_duration=${j(r.total_duration)} eval_duration=${j(r.eval_duration)}`)
  assert(Array.isArray(r.context) && r.context.length > 0 && r.context.every(Number.isInteger), `context should be a non-empty int array`)
  state.genText = r.response
}

async function checkGenerateStream() {
  const parts = await collect(await ollama.generate({ model: MODEL, prompt: GEN_PROMPT, options: GEN_OPTS, stream: true }))
  assert(parts.length >= 2, `expected at least 2 stream parts, got ${parts.length}`)
  parts.slice(0, -1).forEach((p, i) => assert(p.done === false, `part ${i} of ${parts.length} has done=${j(p.done)}`))
  const last = parts[parts.length - 1]
  assert(last.done === true, `last part done=${j(last.done)}`)
  assert(['stop', 'length'].includes(last.done_reason), `last part done_reason=${j(last.done_reason)}`)
  const text = parts.map((p) => p.response ?? '').join('')
  assert(text.length > 0, 'streamed text is empty')
  if (state.genText === undefined) {
    state.genText = (await ollama.generate({ model: MODEL, prompt: GEN_PROMPT, options: GEN_OPTS })).response
  }
  assert(text === state.genText, `streamed text differs from non-streamed at temperature 0:\n stream:     ${j(text)}\n non-stream: ${j(state.genText)}`)
}

async function checkChat() {
  const r = await ollama.chat({ model: MODEL, messages: CHAT_MSGS, options: CHAT_OPTS })
  assert(r.message && r.message.role === 'assistant', `message.role should be assistant, got ${j(r.message)}`)
  assert(typeof r.message.content === 'string' && r.message.content.length > 0, `content should be non-empty, got ${j(r.message.content)}`)
  assert(r.done === true, `done=${j(r.done)}`)
  assert(['stop', 'length'].includes(r.done_reason), `done_reason=${j(r.done_reason)}`)
  state.chatText = r.message.content
}

async function checkChatStream() {
  const parts = await collect(await ollama.chat({ model: MODEL, messages: CHAT_MSGS, options: CHAT_OPTS, stream: true }))
  assert(parts.length >= 2, `expected at least 2 stream parts, got ${parts.length}`)
  parts.slice(0, -1).forEach((p, i) => assert(p.done === false, `part ${i} of ${parts.length} has done=${j(p.done)}`))
  const last = parts[parts.length - 1]
  assert(last.done === true, `last part done=${j(last.done)}`)
  assert(['stop', 'length'].includes(last.done_reason), `last part done_reason=${j(last.done_reason)}`)
  parts.forEach((p, i) => assert(p.message && p.message.role === 'assistant', `part ${i} message=${j(p.message)}`))
  const text = parts.map((p) => p.message.content ?? '').join('')
  assert(text.length > 0, 'streamed chat content is empty')
  if (state.chatText === undefined) {
    state.chatText = (await ollama.chat({ model: MODEL, messages: CHAT_MSGS, options: CHAT_OPTS })).message.content
  }
  assert(text === state.chatText, `streamed chat differs from non-streamed at temperature 0:\n stream:     ${j(text)}\n non-stream: ${j(state.chatText)}`)
}

async function checkList() {
  const r = await ollama.list()
  assert(Array.isArray(r.models), `models should be an array, got ${j(r)}`)
  const names = r.models.map((m) => m.name ?? m.model)
  const m = r.models.find((m) => sameModel(m.name, MODEL) || sameModel(m.model, MODEL))
  assert(m, `model ${MODEL} not in /api/tags: ${j(names)}`)
  assert(typeof m.size === 'number' && m.size > 0, `size=${j(m.size)}`)
  assert(m.details && m.details.format === 'gguf', `details.format=${j(m.details?.format)}`)
  assert(m.details.family === 'llama', `details.family=${j(m.details.family)}`)
}

async function checkShow() {
  const r = await ollama.show({ model: MODEL })
  assert(Array.isArray(r.capabilities) && r.capabilities.includes('completion'), `capabilities should include completion, got ${j(r.capabilities)}`)
  assert(r.model_info && r.model_info['general.architecture'] === 'llama', `model_info['general.architecture']=${j(r.model_info?.['general.architecture'])}`)
  assert(typeof r.template === 'string' && r.template.length > 0, `template should be non-empty, got ${j(r.template)}`)
}

async function checkPs() {
  const r = await ollama.ps()
  const names = (r.models ?? []).map((m) => m.name ?? m.model)
  const m = (r.models ?? []).find((m) => sameModel(m.name, MODEL) || sameModel(m.model, MODEL))
  assert(m, `model ${MODEL} not in /api/ps after use: ${j(names)}`)
  assert(m.size_vram === 0, `size_vram should be 0 on a CPU server, got ${j(m.size_vram)}`)
  assert(typeof m.expires_at === 'string' && !Number.isNaN(Date.parse(m.expires_at)), `expires_at should be a date string, got ${j(m.expires_at)}`)
}

async function checkEmbed() {
  const r = await ollama.embed({ model: MODEL, input: ['Hello world', 'Guten Tag'] })
  assert(Array.isArray(r.embeddings) && r.embeddings.length === 2, `expected 2 embeddings, got ${j(r.embeddings?.length)}`)
  const [a, b] = r.embeddings
  assert(a.length > 0 && a.length === b.length, `embedding lengths ${a.length}, ${b.length}`)
  r.embeddings.forEach((e, i) => {
    assert(e.every(Number.isFinite), `embedding ${i} has non-finite values`)
    const norm = Math.sqrt(e.reduce((s, x) => s + x * x, 0))
    assert(Math.abs(norm - 1) < 1e-3, `embedding ${i} L2 norm should be 1 +- 1e-3, got ${norm}`)
  })
  const single = await ollama.embed({ model: MODEL, input: 'single' })
  assert(single.embeddings.length === 1 && single.embeddings[0].length === a.length, `single-string embed gave ${j(single.embeddings.map((e) => e.length))}`)
}

async function checkUnknownModel() {
  let err
  try {
    await ollama.generate({ model: UNKNOWN_MODEL, prompt: 'hi' })
  } catch (e) {
    err = e
  }
  assert(err, `generate with unknown model ${UNKNOWN_MODEL} should reject`)
  assert(err.status_code === 404, `error status_code should be 404, got ${j(err.status_code)} (${err.message})`)
  assert(String(err.error ?? err.message).includes('not found'), `error should contain 'not found', got ${j(err.error ?? err.message)}`)
  // The client only unwraps {"error": "..."} when Content-Type is application/json;
  // otherwise the message is the raw body text.
  assert(!String(err.message).trimStart().startsWith('{'), `error body not unwrapped (Content-Type not application/json?): ${err.message}`)
}

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
// The small test model is not trained for tools; a prompt that starts like a call makes it
// write one (the grammar makes it valid).
const TOOL_MSGS = [{ role: 'user', content: '<tool_call> get_weather for Berlin' }]

async function checkChatTools() {
  const r = await ollama.chat({ model: MODEL, messages: TOOL_MSGS, tools: [WEATHER_TOOL], options: { temperature: 0 } })
  const calls = r.message.tool_calls
  assert(Array.isArray(calls) && calls.length >= 1, `expected tool calls, got ${j(r.message)}`)
  assert(calls[0].function.name === 'get_weather', `name=${j(calls[0].function.name)}`)
  assert(typeof calls[0].function.arguments.city === 'string', `arguments=${j(calls[0].function.arguments)}`)
  const parts = await collect(await ollama.chat({ model: MODEL, messages: TOOL_MSGS, tools: [WEATHER_TOOL], options: { temperature: 0 }, stream: true }))
  const withCalls = parts.filter((p) => p.message.tool_calls && p.message.tool_calls.length)
  assert(withCalls.length === 1, `calls in one streamed part, got ${withCalls.length}`)
  assert(j(withCalls[0].message.tool_calls.map((c) => c.function)) === j(calls.map((c) => c.function)), 'stream and non-stream calls agree at temperature 0')
  const r2 = await ollama.chat({
    model: MODEL,
    tools: [WEATHER_TOOL],
    options: { temperature: 0, num_predict: 32 },
    messages: [...TOOL_MSGS, r.message, { role: 'tool', tool_name: 'get_weather', content: '14 degrees, rain' }],
  })
  assert(r2.done === true, `done=${j(r2.done)}`)
}

const CHECKS = [
  ['generate', checkGenerate],
  ['generate_stream', checkGenerateStream],
  ['chat', checkChat],
  ['chat_stream', checkChatStream],
  ['chat_tools', checkChatTools],
  ['list', checkList],
  ['show', checkShow],
  ['ps', checkPs],
  ['embed', checkEmbed],
  ['unknown_model_404', checkUnknownModel],
]

function withTimeout(promise, name) {
  let timer
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`check ${name} timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS)
  })
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
}

function describe(e) {
  const cause = e && e.cause ? `\n  cause: ${e.cause.code ?? ''} ${e.cause.message ?? e.cause}` : ''
  const stack = (e && e.stack ? e.stack : String(e)).split('\n').slice(0, 6).map((l) => `  ${l}`).join('\n')
  return stack + cause
}

async function main() {
  let version = '?'
  try {
    version = createRequire(import.meta.url)('ollama/package.json').version
  } catch {}
  console.log(`ollama-js ${version} against ${URL_ARG} model ${MODEL}`)
  let passed = 0
  let failed = 0
  for (const [name, fn] of CHECKS) {
    try {
      await withTimeout(fn(), name)
      passed++
      console.log(`ok ${name}`)
    } catch (e) {
      failed++
      console.log(`FAIL ${name}`)
      console.log(describe(e))
    }
  }
  ollama.abort()
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(failed ? 1 : 0)
}

await main()
