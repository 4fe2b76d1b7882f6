#!/usr/bin/env python3
"""Drive a running candlelight server with the official `ollama` Python client.

Usage: python3 tests/clients/ollama_py_check.py http://127.0.0.1:PORT MODEL

Runs every check in order (a failing check does not stop the others), prints
"ok <name>" per passed check, a traceback per failed one, and finishes with the
line "N passed, M failed". Exit status 0 only if nothing failed.

Environment: CANDLELIGHT_CLIENT_TIMEOUT (seconds per HTTP request, default 300).
"""

import math
import os
import sys
import traceback

from importlib import metadata

import json
import ollama

if len(sys.argv) != 3:
    print(f"usage: {sys.argv[0]} URL MODEL", file=sys.stderr)
    sys.exit(2)

URL = sys.argv[1].rstrip("/")
MODEL = sys.argv[2]
TIMEOUT = float(os.environ.get("CANDLELIGHT_CLIENT_TIMEOUT", "300"))

client = ollama.Client(host=URL, timeout=TIMEOUT)

GEN_PROMPT = "Why is the sky blue?"
GEN_OPTS = {"temperature": 0, "seed": 42, "num_predict": 16}
CHAT_MSGS = [{"role": "user", "content": "Say hello."}]
CHAT_OPTS = {"temperature": 0, "seed": 42, "num_predict": 24}
UNKNOWN_MODEL = "nosuch-model:7b"

# Results shared between checks (e.g. non-stream text reused by the stream check).
state = {}


def norm_name(name):
    """Ollama name rule: a name without a tag means ':latest'."""
    if name is None:
        return None
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def same_model(a, b):
    return norm_name(a) == norm_name(b)


def check_generate():
    r = client.generate(MODEL, GEN_PROMPT, options=GEN_OPTS)
    assert isinstance(r.response, str) and r.response != "", f"response should be a non-empty str, got {r.response!r}"
    assert r.done is True, f"done should be True, got {r.done!r}"
    assert r.done_reason in ("stop", "length"), f"done_reason should be stop/length, got {r.done_reason!r}"
    assert r.model and same_model(r.model, MODEL), f"model echoed as {r.model!r}, expected {MODEL!r}"
    assert r.created_at, f"created_at missing: {r.created_at!r}"
    assert isinstance(r.eval_count, int) and r.eval_count > 0, f"eval_count should be > 0, got {r.eval_count!r}"
    assert r.eval_count <= GEN_OPTS["num_predict"], f"eval_count {r.eval_count} exceeds num_predict {GEN_OPTS['num_predict']}"
    assert isinstance(r.prompt_eval_count, int) and r.prompt_eval_count > 0, (
        f"prompt_eval_count should be > 0, got {r.prompt_eval_count!r}"
    )
    assert isinstance(r.eval_duration, int) and r.eval_duration > 1000, (
        f"eval_duration should be > 1000 ns (durations are nanoseconds), got {r.eval_duration!r}"
    )
    assert isinstance(r.total_duration, int) and r.total_duration >= r.eval_duration, (
        f"total_duration ({r.total_duration!r}) should be >= eval_duration ({r.eval_duration!r})"
    )
    assert isinstance(r.context, (list, tuple)) and len(r.context) > 0, f"context should be a non-empty list, got {r.context!r}"
    assert all(isinstance(t, int) for t in r.context), f"context should hold ints, got {r.context[:10]!r}"
    state["gen_text"] = r.response
    state["gen_done_reason"] = r.done_reason


def check_generate_stream():
    chunks = list(client.generate(MODEL, GEN_PROMPT, options=GEN_OPTS, stream=True))
    assert len(chunks) >= 2, f"expected at least 2 stream chunks, got {len(chunks)}"
    for i, c in enumerate(chunks[:-1]):
        assert c.done is False, f"chunk {i} of {len(chunks)} has done={c.done!r}, expected False"
    last = chunks[-1]
    assert last.done is True, f"last chunk done={last.done!r}, expected True"
    assert last.done_reason in ("stop", "length"), f"last chunk done_reason={last.done_reason!r}"
    assert isinstance(last.eval_count, int) and last.eval_count > 0, f"last chunk eval_count={last.eval_count!r}"
    text = "".join(c.response or "" for c in chunks)
    assert text != "", "streamed text is empty"
    if "gen_text" not in state:
        state["gen_text"] = client.generate(MODEL, GEN_PROMPT, options=GEN_OPTS).response
    assert text == state["gen_text"], (
        f"streamed text differs from non-streamed at temperature 0:\n stream:     {text!r}\n non-stream: {state['gen_text']!r}"
    )
    if "gen_done_reason" in state:
        assert last.done_reason == state["gen_done_reason"], (
            f"stream done_reason {last.done_reason!r} != non-stream {state['gen_done_reason']!r}"
        )


def check_chat():
    r = client.chat(MODEL, messages=CHAT_MSGS, options=CHAT_OPTS)
    assert r.message is not None, "message missing"
    assert r.message.role == "assistant", f"message.role should be 'assistant', got {r.message.role!r}"
    assert isinstance(r.message.content, str) and r.message.content != "", f"content should be non-empty, got {r.message.content!r}"
    assert r.done is True, f"done should be True, got {r.done!r}"
    assert r.done_reason in ("stop", "length"), f"done_reason should be stop/length, got {r.done_reason!r}"
    assert isinstance(r.eval_count, int) and 0 < r.eval_count <= CHAT_OPTS["num_predict"], f"eval_count={r.eval_count!r}"
    assert isinstance(r.prompt_eval_count, int) and r.prompt_eval_count > 0, f"prompt_eval_count={r.prompt_eval_count!r}"
    state["chat_text"] = r.message.content


def check_chat_stream():
    chunks = list(client.chat(MODEL, messages=CHAT_MSGS, options=CHAT_OPTS, stream=True))
    assert len(chunks) >= 2, f"expected at least 2 stream chunks, got {len(chunks)}"
    for i, c in enumerate(chunks):
        assert c.message is not None and c.message.role == "assistant", f"chunk {i} message={c.message!r}"
    for i, c in enumerate(chunks[:-1]):
        assert c.done is False, f"chunk {i} of {len(chunks)} has done={c.done!r}, expected False"
    last = chunks[-1]
    assert last.done is True, f"last chunk done={last.done!r}"
    assert last.done_reason in ("stop", "length"), f"last chunk done_reason={last.done_reason!r}"
    text = "".join(c.message.content or "" for c in chunks)
    assert text != "", "streamed chat content is empty"
    if "chat_text" not in state:
        state["chat_text"] = client.chat(MODEL, messages=CHAT_MSGS, options=CHAT_OPTS).message.content
    assert text == state["chat_text"], (
        f"streamed chat differs from non-streamed at temperature 0:\n stream:     {text!r}\n non-stream: {state['chat_text']!r}"
    )


def check_chat_think_false():
    r = client.chat(MODEL, messages=CHAT_MSGS, options={**CHAT_OPTS, "num_predict": 8}, think=False)
    assert r.done is True, f"done should be True, got {r.done!r}"
    assert r.message.role == "assistant", f"role={r.message.role!r}"
    assert isinstance(r.message.content, str) and r.message.content != "", f"content={r.message.content!r}"
    assert not r.message.thinking, f"think=False must not produce thinking, got {r.message.thinking!r}"


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"enum": ["France", "Germany", "Italy"]},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["city", "country", "population_millions"],
}


def check_chat_structured_output():
    # What Paperless-ngx 3 sends: a JSON-schema format with think=False; at a high
    # temperature the output must still be schema-valid JSON.
    for temperature in (0, 1.2):
        r = client.chat(MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
                        format=SCHEMA, think=False,
                        options={"temperature": temperature, "seed": 7, "num_predict": 200})
        data = json.loads(r.message.content)
        assert set(data) == {"city", "country", "population_millions"}, data
        assert data["country"] in SCHEMA["properties"]["country"]["enum"], data
        assert isinstance(data["population_millions"], int) and 0 <= data["population_millions"] <= 100, data
        assert r.done_reason == "stop", r.done_reason


def check_generate_json_mode():
    r = client.generate(MODEL, "What is the capital of France? Respond using JSON with keys city and country.",
                        format="json", options={"temperature": 0, "num_predict": 100})
    assert isinstance(json.loads(r.response), dict), r.response


def check_bad_schema_rejected():
    try:
        client.generate(MODEL, "x", format={"type": "string", "pattern": "(?<=a)b"})
    except ollama.ResponseError as e:
        assert e.status_code == 400, e.status_code
        assert "invalid JSON schema" in str(e.error), e.error
        return
    raise AssertionError("an uncompilable schema must be a 400")


def check_chat_think_true_rejected():
    try:
        client.chat(MODEL, messages=CHAT_MSGS, options={**CHAT_OPTS, "num_predict": 8}, think=True)
    except ollama.ResponseError as e:
        assert e.status_code == 400, f"expected status 400, got {e.status_code} ({e.error!r})"
        assert "does not support thinking" in str(e.error), f"error text should say 'does not support thinking', got {e.error!r}"
        return
    raise AssertionError("think=True on a non-thinking model should raise ResponseError(400)")


def check_list():
    r = client.list()
    names = [m.model for m in r.models]
    found = [m for m in r.models if same_model(m.model, MODEL)]
    assert found, f"model {MODEL!r} not in /api/tags models: {names!r}"
    m = found[0]
    assert m.size is not None and int(m.size) > 0, f"size should be > 0, got {m.size!r}"
    assert m.modified_at is not None, "modified_at missing"
    assert m.digest, f"digest missing: {m.digest!r}"
    assert m.details is not None, "details missing"
    assert m.details.format == "gguf", f"details.format should be 'gguf', got {m.details.format!r}"
    assert m.details.family == "llama", f"details.family should be 'llama', got {m.details.family!r}"
    assert m.details.quantization_level, f"details.quantization_level should be non-empty, got {m.details.quantization_level!r}"


def check_show():
    r = client.show(MODEL)
    info = r.modelinfo
    assert isinstance(info, dict) or hasattr(info, "get"), f"model_info should be a map, got {type(info)!r}"
    assert info.get("general.architecture") == "llama", (
        f"model_info['general.architecture'] should be 'llama', got {info.get('general.architecture')!r}"
    )
    ctx = info.get("llama.context_length")
    assert isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > 0, f"model_info['llama.context_length'] should be a positive int, got {ctx!r}"
    assert r.capabilities is not None and "completion" in r.capabilities, f"capabilities should contain 'completion', got {r.capabilities!r}"
    assert isinstance(r.template, str) and r.template.strip() != "", f"template should be a non-empty string, got {r.template!r}"
    assert r.details is not None and r.details.format == "gguf", f"details={r.details!r}"


def check_ps():
    r = client.ps()
    names = [m.model for m in r.models]
    found = [m for m in r.models if same_model(m.model, MODEL) or same_model(m.name, MODEL)]
    assert found, f"model {MODEL!r} not in /api/ps models after use: {names!r}"
    m = found[0]
    assert m.size_vram is not None and int(m.size_vram) == 0, f"size_vram should be 0 on a CPU server, got {m.size_vram!r}"
    assert m.size is not None and int(m.size) > 0, f"size should be > 0, got {m.size!r}"
    assert m.expires_at is not None, "expires_at should be set"


def check_embed():
    r = client.embed(MODEL, input=["Hello world", "Guten Tag"])
    embs = r.embeddings
    assert len(embs) == 2, f"expected 2 embeddings, got {len(embs)}"
    assert len(embs[0]) > 0 and len(embs[0]) == len(embs[1]), f"embedding lengths {len(embs[0])}, {len(embs[1])}"
    for i, e in enumerate(embs):
        assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in e), f"embedding {i} has non-finite values"
        norm = math.sqrt(sum(x * x for x in e))
        assert abs(norm - 1.0) < 1e-3, f"embedding {i} L2 norm should be 1.0 +- 1e-3, got {norm}"
    assert list(embs[0]) != list(embs[1]), "different inputs gave identical embeddings"
    state["embed_dim"] = len(embs[0])


def check_embed_single():
    r = client.embed(MODEL, input="single")
    assert len(r.embeddings) == 1, f"expected 1 embedding for a string input, got {len(r.embeddings)}"
    e = r.embeddings[0]
    assert len(e) > 0, "empty embedding"
    if "embed_dim" in state:
        assert len(e) == state["embed_dim"], f"dimension {len(e)} differs from batch call {state['embed_dim']}"


def check_embeddings_legacy():
    r = client.embeddings(MODEL, prompt="Hello")
    assert r.embedding is not None and len(r.embedding) > 0, f"legacy embedding should be non-empty, got {r.embedding!r}"
    assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in r.embedding), "legacy embedding has non-finite values"


def check_unknown_model():
    try:
        client.generate(UNKNOWN_MODEL, "hi")
    except ollama.ResponseError as e:
        assert e.status_code == 404, f"expected status 404, got {e.status_code} ({e.error!r})"
        assert "not found" in str(e.error), f"error should contain 'not found', got {e.error!r}"
        return
    raise AssertionError(f"generate with unknown model {UNKNOWN_MODEL!r} should raise ResponseError(404)")


def get_weather(city: str, unit: str = "celsius") -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name
        unit: celsius or fahrenheit
    """
    return f"14 degrees {unit}, rain in {city}"


# A question the small test model answers with a call (it is not trained for tools; a prompt
# that starts the way a call does makes it write one, and the grammar makes it valid).
TOOL_MSGS = [{"role": "user", "content": "<tool_call> get_weather for Berlin"}]


def check_chat_tools():
    # The client's own tool API: a Python function becomes the tool's schema.
    r = client.chat(MODEL, messages=TOOL_MSGS, tools=[get_weather], options={"temperature": 0})
    calls = r.message.tool_calls
    assert calls, f"expected a tool call, got message {r.message!r}"
    f = calls[0].function
    assert f.name == "get_weather", f"function name {f.name!r}"
    assert isinstance(f.arguments, dict) and isinstance(f.arguments.get("city"), str), f"arguments {f.arguments!r}"
    assert set(f.arguments) <= {"city", "unit"}, f"only the schema's keys: {f.arguments!r}"
    # The result goes back with the call; the model answers (text or another valid call).
    result = get_weather(**f.arguments)
    r2 = client.chat(MODEL, messages=TOOL_MSGS + [r.message, {"role": "tool", "content": result, "tool_name": f.name}],
                     tools=[get_weather], options={"temperature": 0, "num_predict": 48})
    assert r2.done is True, f"done={r2.done!r}"
    for c in r2.message.tool_calls or []:
        assert c.function.name == "get_weather" and isinstance(c.function.arguments.get("city"), str), f"{c!r}"
    state["tool_call"] = (f.name, f.arguments)


def check_chat_tools_stream():
    chunks = list(client.chat(MODEL, messages=TOOL_MSGS, tools=[get_weather], options={"temperature": 0}, stream=True))
    with_calls = [c for c in chunks if c.message.tool_calls]
    assert len(with_calls) == 1, f"the calls come in one chunk, got {len(with_calls)} of {len(chunks)}"
    assert with_calls[0].done is False and chunks[-1].done is True, "calls before the final chunk"
    f = with_calls[0].message.tool_calls[0].function
    if "tool_call" in state:
        assert (f.name, f.arguments) == state["tool_call"], f"stream {f!r} != non-stream {state['tool_call']!r}"
    assert "".join(c.message.content or "" for c in chunks) == "", "no text around the call"


def check_show_capabilities_tools():
    r = client.show(MODEL)
    assert "tools" in (r.capabilities or []), f"capabilities={r.capabilities!r}"


def check_logprobs():
    r = client.generate(MODEL, GEN_PROMPT, options=GEN_OPTS, logprobs=True, top_logprobs=3)
    lp = r.logprobs
    assert lp is not None and len(lp) == r.eval_count, f"one entry per token: {lp!r}"
    assert "".join(t.token for t in lp) == r.response, "the tokens spell the response"
    for t in lp:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3, f"{t!r}"
        # Temperature 0: the chosen token is the most likely one.
        assert t.top_logprobs[0].token == t.token, f"{t!r}"
    chunks = list(client.chat(MODEL, messages=CHAT_MSGS, options=CHAT_OPTS, stream=True, logprobs=True))
    streamed = [t for c in chunks for t in (c.logprobs or [])]
    assert "".join(t.token for t in streamed) == "".join(c.message.content or "" for c in chunks), "per chunk"


def check_create_show_delete():
    # The client's create API: a new name for the model with its own system prompt and
    # parameters, applied to every request; then removed again.
    name = "py-filer:latest"
    r = client.create(model=name, from_=MODEL, system="You file household papers.",
                      parameters={"temperature": 0, "num_predict": 4})
    assert r.status == "success", f"{r!r}"
    s = client.show(name)
    assert 'SYSTEM """You file household papers."""' in s.modelfile, f"{s.modelfile!r}"
    assert "num_predict 4" in (s.parameters or ""), f"{s.parameters!r}"
    g = client.generate(name, "Hi")
    assert g.eval_count == 4, f"num_predict from the model: {g.eval_count!r}"
    assert client.delete(name).status == "success"
    assert all(m.model != name for m in client.list().models), "deleted"


CHECKS = [
    ("generate", check_generate),
    ("generate_stream", check_generate_stream),
    ("chat", check_chat),
    ("chat_stream", check_chat_stream),
    ("chat_think_false", check_chat_think_false),
    ("chat_think_true_rejected", check_chat_think_true_rejected),
    ("chat_structured_output", check_chat_structured_output),
    ("chat_tools", check_chat_tools),
    ("chat_tools_stream", check_chat_tools_stream),
    ("show_capabilities_tools", check_show_capabilities_tools),
    ("generate_json_mode", check_generate_json_mode),
    ("bad_schema_rejected", check_bad_schema_rejected),
    ("create_show_delete", check_create_show_delete),
    ("list", check_list),
    ("show", check_show),
    ("ps", check_ps),
    ("logprobs", check_logprobs),
    ("embed", check_embed),
    ("embed_single", check_embed_single),
    ("embeddings_legacy", check_embeddings_legacy),
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
    print(f"ollama-python {metadata.version('ollama')} against {URL} model {MODEL}", flush=True)
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
