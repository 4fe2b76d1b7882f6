#!/usr/bin/env python3
"""Drive a running candlelight server's OpenAI-compatible /v1 API with the official `openai` Python client.

Usage: python3 tests/clients/openai_py_check.py http://127.0.0.1:PORT MODEL

Runs every check in order (a failing check does not stop the others), prints
"ok <name>" per passed check, a compact traceback per failed one, and finishes
with the line "N passed, M failed". Exit status 0 only if nothing failed.

Environment: CANDLELIGHT_CLIENT_TIMEOUT (seconds per HTTP request, default 300).
"""

import base64
import json
import math
import os
import struct
import sys
import traceback
from importlib import metadata

import openai
from openai import OpenAI

if len(sys.argv) != 3:
    print(f"usage: {sys.argv[0]} URL MODEL", file=sys.stderr)
    sys.exit(2)

URL = sys.argv[1].rstrip("/")
MODEL = sys.argv[2]
TIMEOUT = float(os.environ.get("CANDLELIGHT_CLIENT_TIMEOUT", "300"))

# max_retries=0: a failing request must fail once, not be silently re-sent.
client = OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)

CHAT_MSGS = [{"role": "user", "content": "Say hello."}]
CHAT_ARGS = dict(temperature=0, seed=42, max_tokens=24)
COMPL_PROMPT = "The capital of France is"
COMPL_ARGS = dict(temperature=0, seed=42, max_tokens=16)
UNKNOWN_MODEL = "nosuch-model:7b"

state = {}


def norm_name(name):
    if name is None:
        return None
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def same_model(a, b):
    return norm_name(a) == norm_name(b)


def check_chat():
    r = client.chat.completions.create(model=MODEL, messages=CHAT_MSGS, **CHAT_ARGS)
    assert r.object == "chat.completion", f"object should be 'chat.completion', got {r.object!r}"
    assert isinstance(r.id, str) and r.id.startswith("chatcmpl-"), f"id should start with 'chatcmpl-', got {r.id!r}"
    assert isinstance(r.created, int) and r.created > 0, f"created should be a unix timestamp, got {r.created!r}"
    assert len(r.choices) == 1, f"expected 1 choice, got {len(r.choices)}"
    c = r.choices[0]
    assert c.index == 0, f"choices[0].index={c.index!r}"
    assert c.message.role == "assistant", f"message.role={c.message.role!r}"
    assert isinstance(c.message.content, str) and c.message.content != "", f"content should be non-empty, got {c.message.content!r}"
    assert c.finish_reason in ("stop", "length"), f"finish_reason should be stop/length, got {c.finish_reason!r}"
    u = r.usage
    assert u is not None, "usage missing"
    assert u.prompt_tokens > 0, f"usage.prompt_tokens={u.prompt_tokens!r}"
    assert 0 < u.completion_tokens <= CHAT_ARGS["max_tokens"], f"usage.completion_tokens={u.completion_tokens!r}"
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, (
        f"usage.total_tokens {u.total_tokens} != {u.prompt_tokens} + {u.completion_tokens}"
    )
    state["chat_text"] = c.message.content
    state["chat_finish"] = c.finish_reason
    state["chat_usage"] = (u.prompt_tokens, u.completion_tokens)


def check_chat_stream():
    stream = client.chat.completions.create(
        model=MODEL, messages=CHAT_MSGS, stream=True, stream_options={"include_usage": True}, **CHAT_ARGS
    )
    chunks = list(stream)
    assert len(chunks) >= 2, f"expected at least 2 chunks, got {len(chunks)}"
    for i, ch in enumerate(chunks):
        assert ch.object == "chat.completion.chunk", f"chunk {i} object={ch.object!r}"
        assert isinstance(ch.id, str) and ch.id.startswith("chatcmpl-"), f"chunk {i} id={ch.id!r}"
    text = "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish and finish[-1] in ("stop", "length"), f"no chunk carried finish_reason stop/length: {finish!r}"
    usage_chunks = [ch for ch in chunks if ch.usage is not None]
    assert usage_chunks, "stream_options.include_usage=True but no chunk carried usage"
    assert chunks[-1].usage is not None, "the usage chunk should be the final chunk"
    u = chunks[-1].usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0, f"usage={u!r}"
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage total mismatch: {u!r}"
    assert text != "", "streamed content is empty"
    if "chat_text" not in state:
        state["chat_text"] = client.chat.completions.create(model=MODEL, messages=CHAT_MSGS, **CHAT_ARGS).choices[0].message.content
    assert text == state["chat_text"], (
        f"streamed content differs from non-streamed at temperature 0:\n stream:     {text!r}\n non-stream: {state['chat_text']!r}"
    )
    if "chat_finish" in state:
        assert finish[-1] == state["chat_finish"], f"stream finish_reason {finish[-1]!r} != non-stream {state['chat_finish']!r}"
    if "chat_usage" in state:
        assert (u.prompt_tokens, u.completion_tokens) == state["chat_usage"], (
            f"stream usage {(u.prompt_tokens, u.completion_tokens)} != non-stream {state['chat_usage']}"
        )


def check_completions():
    r = client.completions.create(model=MODEL, prompt=COMPL_PROMPT, **COMPL_ARGS)
    assert isinstance(r.id, str) and r.id.startswith("cmpl-"), f"id should start with 'cmpl-', got {r.id!r}"
    assert r.object == "text_completion", f"object should be 'text_completion', got {r.object!r}"
    assert len(r.choices) == 1, f"expected 1 choice, got {len(r.choices)}"
    c = r.choices[0]
    assert isinstance(c.text, str) and c.text != "", f"text should be non-empty, got {c.text!r}"
    assert c.finish_reason in ("stop", "length"), f"finish_reason={c.finish_reason!r}"
    assert r.usage is not None and r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0, f"usage={r.usage!r}"
    state["compl_text"] = c.text


def check_completions_stream():
    chunks = list(client.completions.create(model=MODEL, prompt=COMPL_PROMPT, stream=True, **COMPL_ARGS))
    assert len(chunks) >= 2, f"expected at least 2 chunks, got {len(chunks)}"
    for i, ch in enumerate(chunks):
        assert isinstance(ch.id, str) and ch.id.startswith("cmpl-"), f"chunk {i} id={ch.id!r}"
    text = "".join(ch.choices[0].text or "" for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish and finish[-1] in ("stop", "length"), f"no chunk carried finish_reason stop/length: {finish!r}"
    if "compl_text" not in state:
        state["compl_text"] = client.completions.create(model=MODEL, prompt=COMPL_PROMPT, **COMPL_ARGS).choices[0].text
    assert text == state["compl_text"], (
        f"streamed text differs from non-streamed at temperature 0:\n stream:     {text!r}\n non-stream: {state['compl_text']!r}"
    )


def check_models_list():
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert any(same_model(i, MODEL) for i in ids), f"model {MODEL!r} not in /v1/models ids: {ids!r}"
    for m in page.data:
        assert m.object == "model", f"model {m.id!r} object={m.object!r}"
        assert isinstance(m.created, int), f"model {m.id!r} created={m.created!r}"


def check_models_retrieve():
    m = client.models.retrieve(MODEL)
    assert same_model(m.id, MODEL), f"retrieved id {m.id!r}, expected {MODEL!r}"
    assert m.object == "model", f"object={m.object!r}"


def check_embeddings_float():
    r = client.embeddings.create(model=MODEL, input=["a", "b"], encoding_format="float")
    assert r.object == "list", f"object={r.object!r}"
    assert len(r.data) == 2, f"expected 2 embeddings, got {len(r.data)}"
    for i, d in enumerate(r.data):
        assert d.index == i, f"data[{i}].index={d.index!r}"
        assert isinstance(d.embedding, list) and len(d.embedding) > 0, f"data[{i}].embedding should be a non-empty float list"
        assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in d.embedding), f"data[{i}] has non-finite values"
    assert len(r.data[0].embedding) == len(r.data[1].embedding), "embedding lengths differ"
    state["emb_float"] = [d.embedding for d in r.data]


def _float_ref():
    if "emb_float" not in state:
        r = client.embeddings.create(model=MODEL, input=["a", "b"], encoding_format="float")
        state["emb_float"] = [d.embedding for d in r.data]
    return state["emb_float"]


def check_embeddings_base64_default():
    # With encoding_format omitted the client itself asks for base64 and decodes it
    # (what every default openai-python user sends).
    r = client.embeddings.create(model=MODEL, input=["a", "b"])
    ref = _float_ref()
    assert len(r.data) == 2, f"expected 2 embeddings, got {len(r.data)}"
    for i, d in enumerate(r.data):
        assert isinstance(d.embedding, list), f"data[{i}].embedding was not decoded to a list: {type(d.embedding)!r}"
        assert len(d.embedding) == len(ref[i]), f"data[{i}] length {len(d.embedding)} != float version {len(ref[i])}"
        diff = max(abs(a - b) for a, b in zip(d.embedding, ref[i]))
        assert diff < 1e-4, f"data[{i}] base64-decoded values differ from float version by up to {diff}"


def check_embeddings_base64_explicit():
    # Explicit encoding_format="base64": the client returns the raw base64 string.
    r = client.embeddings.create(model=MODEL, input=["a", "b"], encoding_format="base64")
    ref = _float_ref()
    assert len(r.data) == 2, f"expected 2 embeddings, got {len(r.data)}"
    for i, d in enumerate(r.data):
        assert isinstance(d.embedding, str), f"data[{i}].embedding should be a base64 string, got {type(d.embedding)!r}"
        raw = base64.b64decode(d.embedding)
        assert len(raw) % 4 == 0, f"data[{i}] decodes to {len(raw)} bytes, not a whole number of float32"
        vals = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert len(vals) == len(ref[i]), f"data[{i}] length {len(vals)} != float version {len(ref[i])}"
        diff = max(abs(a - b) for a, b in zip(vals, ref[i]))
        assert diff < 1e-4, f"data[{i}] base64 values differ from float version by up to {diff}"


def check_unknown_model():
    try:
        client.chat.completions.create(model=UNKNOWN_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    except openai.NotFoundError as e:
        assert e.status_code == 404, f"status_code={e.status_code!r}"
        assert "not found" in str(e), f"error should mention 'not found': {e}"
        return
    raise AssertionError(f"chat with unknown model {UNKNOWN_MODEL!r} should raise openai.NotFoundError")


def check_chat_json_schema():
    schema = {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 40},
        "document_type": {"enum": ["Rechnung", "Vertrag", "Bescheid"]}},
        "required": ["title", "document_type"]}
    r = client.chat.completions.create(
        model=MODEL, temperature=1.0, seed=5, max_tokens=120,
        messages=[{"role": "user", "content": "Classify: Stadtwerke München Stromrechnung März 2024"}],
        response_format={"type": "json_schema", "json_schema": {"name": "doc", "schema": schema}})
    import json
    data = json.loads(r.choices[0].message.content)
    assert set(data) == {"title", "document_type"}, data
    assert data["document_type"] in ("Rechnung", "Vertrag", "Bescheid"), data
    assert len(data["title"]) <= 40, data


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a timezone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 40}}, "required": ["tz"]}}}
TOOL_MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_chat_tools_required():
    r = client.chat.completions.create(model=MODEL, messages=TOOL_MSGS, tools=[WEATHER_TOOL, TIME_TOOL],
                                       tool_choice="required", temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", f"finish_reason={c.finish_reason!r}"
    calls = c.message.tool_calls
    assert calls, f"expected tool calls, got {c.message!r}"
    for call in calls:
        assert call.type == "function" and call.id, f"{call!r}"
        args = json.loads(call.function.arguments)
        assert call.function.name in ("get_weather", "get_time"), f"{call.function.name!r}"
        if call.function.name == "get_weather":
            assert isinstance(args["city"], str) and args.get("unit", "celsius") in ("celsius", "fahrenheit"), f"{args!r}"
        else:
            assert isinstance(args["tz"], str), f"{args!r}"
    # The result answers the call by its id; the model then answers.
    first = calls[0]
    r2 = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=48, tools=[WEATHER_TOOL, TIME_TOOL],
                                        messages=TOOL_MSGS + [c.message.model_dump(exclude_none=True),
                                                              {"role": "tool", "tool_call_id": first.id, "content": "14 degrees, rain"}])
    assert r2.choices[0].finish_reason in ("stop", "length", "tool_calls"), f"{r2.choices[0]!r}"


def check_chat_tools_named_stream():
    stream = client.chat.completions.create(model=MODEL, messages=TOOL_MSGS, tools=[WEATHER_TOOL, TIME_TOOL],
                                            tool_choice={"type": "function", "function": {"name": "get_time"}},
                                            temperature=1.5, seed=3, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        for ch in chunk.choices:
            for d in ch.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
            finish = ch.finish_reason or finish
    assert finish == "tool_calls", f"finish_reason={finish!r}"
    assert len(calls) == 1 and calls[0]["name"] == "get_time", f"one call to the named function: {calls!r}"
    assert isinstance(json.loads(calls[0]["arguments"])["tz"], str), f"{calls!r}"


def check_chat_tools_pydantic_strict():
    # The SDK's typed helper: a pydantic model becomes a strict function tool, parsed back.
    import pydantic

    class LookupInvoice(pydantic.BaseModel):
        invoice_number: str
        total: float

    r = client.chat.completions.parse(model=MODEL, temperature=1.0, seed=1,
                                      messages=[{"role": "user", "content": "Invoice 2024-17 over 144.34 EUR."}],
                                      tools=[openai.pydantic_function_tool(LookupInvoice)], tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, LookupInvoice), f"{call!r}"


def check_chat_tools_bad_definition():
    try:
        client.chat.completions.create(model=MODEL, messages=TOOL_MSGS,
                                       tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}})
    except openai.BadRequestError as e:
        assert "nope" in str(e), f"message names the function: {e}"
    else:
        raise AssertionError("a tool_choice naming an absent function should be a 400")


def check_chat_logprobs():
    r = client.chat.completions.create(model=MODEL, messages=CHAT_MSGS, logprobs=True, top_logprobs=2, **CHAT_ARGS)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens, f"{len(content)} entries for {r.usage.completion_tokens} tokens"
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2 and bytes(t.bytes).decode("utf-8", "replace"), f"{t!r}"
    stream = client.chat.completions.create(model=MODEL, messages=CHAT_MSGS, logprobs=True, stream=True, **CHAT_ARGS)
    tokens, text = [], ""
    for chunk in stream:
        for ch in chunk.choices:
            text += ch.delta.content or ""
            if ch.logprobs and ch.logprobs.content:
                tokens += [t.token for t in ch.logprobs.content]
    assert "".join(tokens) == text, f"{tokens!r} vs {text!r}"
    try:
        client.chat.completions.create(model=MODEL, messages=CHAT_MSGS, logprobs=True, top_logprobs=21, **CHAT_ARGS)
    except openai.BadRequestError as e:
        assert "top_logprobs" in str(e)
    else:
        raise AssertionError("top_logprobs 21 should be a 400")


CHECKS = [
    ("chat", check_chat),
    ("chat_json_schema", check_chat_json_schema),
    ("chat_stream", check_chat_stream),
    ("chat_tools_required", check_chat_tools_required),
    ("chat_tools_named_stream", check_chat_tools_named_stream),
    ("chat_tools_pydantic_strict", check_chat_tools_pydantic_strict),
    ("chat_tools_bad_definition", check_chat_tools_bad_definition),
    ("chat_logprobs", check_chat_logprobs),
    ("completions", check_completions),
    ("completions_stream", check_completions_stream),
    ("models_list", check_models_list),
    ("models_retrieve", check_models_retrieve),
    ("embeddings_float", check_embeddings_float),
    ("embeddings_base64_default", check_embeddings_base64_default),
    ("embeddings_base64_explicit", check_embeddings_base64_explicit),
    ("unknown_model_404", check_unknown_model),
]


def describe_failure(e):
    """Compact traceback: this script's frames plus the exception (no library internals, no chained noise)."""
    here = os.path.abspath(__file__)
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == here]
    lines = ["  Traceback (this script's frames):"]
    lines += ["    " + l.rstrip("\n").replace("\n", "\n    ") for l in traceback.format_list(frames)]
    lines += ["  " + l for l in "".join(traceback.format_exception_only(type(e), e)).rstrip("\n").split("\n")]
    return "\n".join(lines)


def main():
    print(f"openai-python {metadata.version('openai')} against {URL}/v1 model {MODEL}", flush=True)
    passed = failed = 0
    for name, fn in CHECKS:
        try:
            fn()
        except Exception as e:
            failed += 1
            print(f"FAIL {name}", flush=True)
            print(describe_failure(e), flush=True)
        else:
            passed += 1
            print(f"ok {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
