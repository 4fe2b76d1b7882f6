#!/usr/bin/env python3
"""Writes the reference data the integration tests compare against, produced by llama.cpp
(through llama-cpp-python) from the same GGUF file:

  tests/data/smollm2_tokens.json  token ids for a varied set of strings
  tests/data/smollm2_logits.json  next-token logits (top 20) after a few prompts

Run once by hand when the test model changes (not in CI; the outputs are committed):
  pip install llama-cpp-python==0.3.36 && scripts/make-reference-data.py
"""
import json
import pathlib

import numpy as np
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/cache/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = ROOT / "tests/data"

STRINGS = [
    "Hello world",
    "Hello, World! How are you?",
    "Straße, Größe, Übergröße, Äpfel und Öl",
    "Stadtwerke München GmbH — Rechnung Nr. 2024-0815",
    "Emoji: 😀🎉👍🏽 and flags 🇩🇪",
    "中文文本和日本語のテキスト、한국어",
    "Digits: 1234567890 3.14159 1,000,000.00 EUR",
    "Line one\r\nLine two\r\n\r\nLine four",
    "Runs of spaces:  two   three    four     five",
    "\ttabs\tand\nnewlines\n\n\nend",
    "Text that looks like a control token: <|im_end|> and <|im_start|>user",
    "  leading and trailing spaces  ",
    "Mixed: café naïve résumé coöperate",
    "URL https://paperless.example.org/api/documents/?page=2&page_size=25",
    "JSON {\"title\": \"Rechnung\", \"tags\": [\"Strom\", \"2024\"]}",
    "",
]

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a haiku about invoices.<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. The quick brown",
]


def main() -> None:
    llm = Llama(str(MODEL), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    tokens = [
        {"text": s, "ids": llm.tokenize(s.encode(), add_bos=False, special=False)}
        for s in STRINGS
    ]
    (DATA / "smollm2_tokens.json").write_text(json.dumps(tokens, ensure_ascii=False, indent=1))

    logits = []
    for p in PROMPTS:
        ids = llm.tokenize(p.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        top = np.argsort(-last)[:20]
        logits.append({
            "prompt_ids": ids,
            "top_ids": [int(i) for i in top],
            "top_logits": [float(last[i]) for i in top],
        })
    (DATA / "smollm2_logits.json").write_text(json.dumps(logits, indent=1))


if __name__ == "__main__":
    main()
