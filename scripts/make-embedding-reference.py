#!/usr/bin/env python3
"""Writes tests/data/all_minilm_reference.json: the sentence embeddings that the
sentence-transformers library itself computes with all-MiniLM-L6-v2 (the folder
scripts/fetch-test-model puts in models/cache/all-minilm-l6-v2), for the tests to compare
candlelight's /api/embed against (cosine >= 0.9999).

Run by hand when the reference should change (not in CI; the output is committed; it needs
PyTorch, which CI does not install):
  python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers==5.1.2
  /tmp/st/bin/python scripts/make-embedding-reference.py
"""
import json
import pathlib

import sentence_transformers
from sentence_transformers import SentenceTransformer

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/cache/all-minilm-l6-v2"
OUT = ROOT / "tests/data/all_minilm_reference.json"

LONG = " ".join(
    f"Position {i}: Stromlieferung für den Zeitraum Januar bis März, Verbrauch {100 + i} kWh."
    for i in range(60)
)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Rechnung Nr. 2024-0815 der Stadtwerke München GmbH über 144,34 EUR.",
    "Ihr Steuerbescheid für 2023: Erstattung von 412,00 € auf Ihr Konto.",
    "Kfz-Versicherung: Beitragsrechnung für das Fahrzeug M-AB 1234.",
    "Insurance policy renewal notice for your home contents cover.",
    "Straße, Größe, Übergröße, Äpfel und Öl",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "",
    "a",
    "Emoji 😀 and CJK 中文 text mixed with Deutsch.",
    "   leading and trailing whitespace   ",
    LONG,  # far beyond max_seq_length (256): truncated, as sentence-transformers does
]


def main() -> None:
    model = SentenceTransformer(str(MODEL), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=4, normalize_embeddings=False)
    tokens = [len(model.tokenizer(s)["input_ids"]) for s in SENTENCES]
    OUT.write_text(json.dumps({
        "made_by": f"sentence-transformers {sentence_transformers.__version__}",
        "max_seq_length": model.max_seq_length,
        "cases": [
            {"text": s, "tokens_untruncated": n, "embedding": [round(float(x), 7) for x in v]}
            for s, v, n in zip(SENTENCES, vectors, tokens)
        ],
    }, ensure_ascii=False))
    print(f"wrote {OUT}: {len(SENTENCES)} sentences, dim {len(vectors[0])}")


if __name__ == "__main__":
    main()
