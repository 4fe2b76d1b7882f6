#!/usr/bin/env python3
"""Replays the calls Paperless-ngx 3.x's built-in AI makes to an Ollama backend, through the
official `ollama` Python client (the one its llama-index integration uses), against a running
candlelight server.

Usage: python3 tests/clients/paperless_ngx3_check.py http://127.0.0.1:PORT LLM EMBED_MODEL

What Paperless-ngx 3 sends (../shared/reference/ollama-api.md, "What the Paperless-side clients
actually call"): suggestions are `POST /api/chat` with `format` = the JSON schema of its
DocumentClassifierSchema (a pydantic model of six fields), `think=False`, `num_ctx` 8192 from its
context window; the document index (RAG) calls `POST /api/embed` with lists of text chunks.
Its OpenAI-like backend (llama-index `OpenAI`/`OpenAILike`, `chat_with_tools` with
`tool_required=True`) instead offers the schema as a function and reads the answer from the
call's arguments: `POST /v1/chat/completions` with `tools` = [that function] and
`tool_choice: "required"`, plus `chat_template_kwargs` asking for no thinking.

Prints "ok <name>" per passed check, a traceback per failed one, and "N passed, M failed".
"""

import json
import math
import os
import sys
import traceback

import ollama
import openai
from pydantic import BaseModel

if len(sys.argv) != 4:
    print(f"usage: {sys.argv[0]} URL LLM EMBED_MODEL", file=sys.stderr)
    sys.exit(2)

URL, LLM, EMBED = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
client = ollama.Client(host=URL, timeout=float(os.environ.get("CANDLELIGHT_CLIENT_TIMEOUT", "300")))


class DocumentClassifierSchema(BaseModel):
    """The field set Paperless-ngx 3 asks its LLM for (src/paperless_ai)."""

    title: str
    tags: list[str]
    correspondents: list[str]
    document_types: list[str]
    storage_paths: list[str]
    dates: list[str]


DOCUMENT = (
    "Stadtwerke München GmbH\nRechnung Nr. 2024-0815\nDatum: 12.03.2024\n"
    "Stromlieferung Januar bis Februar: 412 kWh, Gesamtbetrag 144,34 EUR inkl. 19% MwSt."
)

PROMPT = (
    "You are a document classification assistant. Analyze the following document and suggest "
    "a title, tags, correspondents, document types, storage paths and dates. Respond in JSON.\n\n"
    f"Document content:\n{DOCUMENT}"
)

CHUNKS = [
    DOCUMENT,
    "Allianz Versicherungs-AG, Beitragsrechnung Kfz-Haftpflicht 2024.",
    "Finanzamt Köln-Mitte: Bescheid für 2023 über Einkommensteuer.",
]


def check_suggestions_chat():
    schema = DocumentClassifierSchema.model_json_schema()
    r = client.chat(
        model=LLM,
        messages=[{"role": "user", "content": PROMPT}],
        format=schema,
        think=False,
        options={"num_ctx": 8192, "temperature": 0},
    )
    assert r.done is True, r
    content = r.message.content
    parsed = DocumentClassifierSchema.model_validate_json(content)  # raises if not the schema
    assert isinstance(parsed.title, str)
    assert r.message.thinking in (None, ""), f"think=False must not return thinking: {r.message.thinking!r}"
    assert isinstance(r.eval_count, int) and r.eval_count > 0
    assert isinstance(r.total_duration, int) and r.total_duration > 1000


def check_suggestions_chat_stream():
    schema = DocumentClassifierSchema.model_json_schema()
    parts = list(client.chat(
        model=LLM,
        messages=[{"role": "user", "content": PROMPT}],
        format=schema,
        think=False,
        stream=True,
        options={"num_ctx": 8192, "temperature": 0},
    ))
    assert parts[-1].done is True
    text = "".join(p.message.content for p in parts)
    DocumentClassifierSchema.model_validate_json(text)


def check_suggestions_openai_backend_tool_call():
    # The request llama-index's OpenAI LLM builds for chat_with_tools(tool_required=True).
    oa = openai.OpenAI(base_url=URL + "/v1", api_key="unused", timeout=300)
    tool = {"type": "function", "function": {
        "name": "DocumentClassifierSchema",
        "description": DocumentClassifierSchema.__doc__,
        "parameters": DocumentClassifierSchema.model_json_schema()}}
    r = oa.chat.completions.create(
        model=LLM,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[tool],
        tool_choice="required",
        temperature=0.1,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    calls = r.choices[0].message.tool_calls
    assert calls, f"error_on_no_tool_call would raise: {r.choices[0].message!r}"
    assert calls[0].function.name == "DocumentClassifierSchema", calls[0].function.name
    # What paperless does with it: DocumentClassifierSchema(**tool_kwargs).
    parsed = DocumentClassifierSchema(**json.loads(calls[0].function.arguments))
    assert isinstance(parsed.title, str) and parsed.title.strip(), parsed


def unit(v):
    return abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-3


def check_index_embed_batch():
    r = client.embed(model=EMBED, input=CHUNKS, options={"num_ctx": 8192}, keep_alive="5m")
    assert len(r.embeddings) == len(CHUNKS), len(r.embeddings)
    assert all(len(v) == 384 for v in r.embeddings), [len(v) for v in r.embeddings]
    assert all(unit(v) for v in r.embeddings)
    assert isinstance(r.prompt_eval_count, int) and r.prompt_eval_count > 0
    # The same invoice asked as a query is nearer to its own chunk than to the others.
    q = client.embed(model=EMBED, input="Stromrechnung Stadtwerke München März 2024").embeddings[0]
    sims = [sum(a * b for a, b in zip(q, v)) for v in r.embeddings]
    assert sims[0] == max(sims), sims


def check_index_embed_single():
    r = client.embed(model=EMBED, input="Wann ist die Kfz-Versicherung fällig?")
    assert len(r.embeddings) == 1 and len(r.embeddings[0]) == 384


def check_both_models_stay_loaded():
    names = {m.model for m in client.ps().models}
    assert any(n.startswith(LLM.split(":")[0]) for n in names), names
    assert any(n.startswith(EMBED.split(":")[0]) for n in names), names


CHECKS = [
    check_suggestions_chat,
    check_suggestions_chat_stream,
    check_suggestions_openai_backend_tool_call,
    check_index_embed_batch,
    check_index_embed_single,
    check_both_models_stay_loaded,
]

passed = failed = 0
for check in CHECKS:
    try:
        check()
        passed += 1
        print(f"ok {check.__name__}")
    except Exception:
        failed += 1
        print(f"FAILED {check.__name__}")
        traceback.print_exc(file=sys.stdout)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
