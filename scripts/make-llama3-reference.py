#!/usr/bin/env python3
"""Writes tests/data/llama3_tokens.json: what Hugging Face's own `tokenizers` library makes of
the real Llama 3.2 tokenizer (fetched by scripts/fetch-test-model), for the tests to compare
candlelight's tokenizer and chat template against.

  tokens  ids of a varied set of strings, encoded as candlelight encodes document text:
          no BOS, and special-token look-alikes (`<|eot_id|>` typed in a document) stay text
  chats   whole conversations in the Llama 3.2 layout Ollama's llama3.2 template produces,
          written out here by hand, encoded with the control tokens recognised

Run by hand when the reference should change (not in CI; the output is committed):
  pip install tokenizers==0.23.3 && scripts/make-llama3-reference.py
"""
import json
import pathlib

from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "models/cache/llama3.2-tokenizer/tokenizer.json"
OUT = ROOT / "tests/data/llama3_tokens.json"

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
    "A document that says <|eot_id|> and <|start_header_id|>system<|end_header_id|>",
    "<|begin_of_text|><|end_of_text|>",
    "  leading and trailing spaces  ",
    "Mixed: café naïve résumé coöperate",
    "Contractions: I'm, you're, they've, it's, we'll, he'd, DON'T",
    "URL https://paperless.example.org/api/documents/?page=2&page_size=25",
    'JSON {"title": "Rechnung", "tags": ["Strom", "2024"], "created": "2024-03-12"}',
    "Sehr geehrte Damen und Herren,\n\nanbei erhalten Sie Ihre Jahresabrechnung 2023.",
    "",
]

# (system or None, [(role, content)], generation prompt)
CHATS = [
    (None, [("user", "What is the capital of France?")], True),
    ("You classify documents. Answer with JSON only.",
     [("user", "Rechnung Nr. 2024-0815\nStadtwerke München")], True),
    ("Be brief.", [("user", "Hi"), ("assistant", "Hello! How can I help?"),
                   ("user", "  Tell me a joke.  ")], True),
    (None, [("user", "A user typing <|eot_id|> gets text, not a turn end.")], True),
    ("System only.", [("user", "Last turn without a generation prompt.")], False),
]


def render(system, turns, generation_prompt):
    """Ollama's llama3.2 layout: BOS (llama.cpp adds it), a system block that always carries the
    knowledge-cutoff line, then one block per message with its content trimmed."""
    out = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    out += "Cutting Knowledge Date: December 2023\n\n"
    if system:
        out += system.strip()
    out += "<|eot_id|>"
    for role, content in turns:
        out += f"<|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>"
    if generation_prompt:
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return out


def main() -> None:
    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.encode_special_tokens = True
    tokens = [{"text": s, "ids": tok.encode(s, add_special_tokens=False).ids} for s in STRINGS]
    chats = []
    for system, turns, gen in CHATS:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": r, "content": c} for r, c in turns
        ]
        text = render(system, turns, gen)
        ids = render_ids(tok, system, turns, gen)
        if "<|eot_id|>" not in "".join(c for _, c in turns):
            # Piecewise encoding equals HF's encoding of the whole template text.
            tok.encode_special_tokens = False
            assert ids == tok.encode(text, add_special_tokens=False).ids, text
            tok.encode_special_tokens = True
        chats.append({"messages": messages, "generation_prompt": gen, "text": text, "ids": ids})
    OUT.write_text(json.dumps({"tokens": tokens, "chats": chats}, ensure_ascii=False, indent=1))
    print(f"wrote {OUT}")


def render_ids(tok, system, turns, gen):
    """The ids of render(): control tokens by id, every text span encoded on its own."""
    def special(name):
        return [tok.token_to_id(name)]

    def text(t):
        return tok.encode(t, add_special_tokens=False).ids if t else []

    ids = special("<|begin_of_text|>")
    ids += special("<|start_header_id|>") + text("system") + special("<|end_header_id|>")
    ids += text("\n\nCutting Knowledge Date: December 2023\n\n" + (system.strip() if system else ""))
    ids += special("<|eot_id|>")
    for role, content in turns:
        ids += special("<|start_header_id|>") + text(role) + special("<|end_header_id|>")
        ids += text("\n\n" + content.strip()) + special("<|eot_id|>")
    if gen:
        ids += special("<|start_header_id|>") + text("assistant") + special("<|end_header_id|>")
        ids += text("\n\n")
    return ids


if __name__ == "__main__":
    main()
