"""Causal-LM data fixtures: what transformers makes of a handful of conversations, prompt /
completion pairs and texts with SmolLM2-135M-Instruct's tokenizer (read from its GGUF file).

For each chat template (SmolLM2's own, from the GGUF; and the Llama-3-style and Qwen2-style
templates in tests/fixtures/lm-data/), every conversation is rendered with
`tokenizer.apply_chat_template(tokenize=False)` and tokenised with `apply_chat_template(...)`
(`input_ids`). The loss mask marks the assistant replies: assistant message i's text is
render(messages[:i], add_generation_prompt=True) .. render(messages[:i+1]).rstrip(), and a token is
marked when its character range overlaps such a span (transformers' rule for
`return_assistant_tokens_mask`). For SmolLM2 the mask is also computed by transformers itself,
`return_assistant_tokens_mask=True` with smollm2-generation.jinja (SmolLM2's template with
`{% generation %}` around each reply's content and <|im_end|>), and the two must agree.

Prompt / completion pairs and texts follow TRL's SFTTrainer: eos_token appended (to the completion
/ the text), the prompt's own token count marks where the loss starts.

Also the generation prompt for "What is LoRA?" (`add_generation_prompt=True`), text and ids.

Run: /work/bin/cpu /work/venv/bin/python scripts/golden/make_lm_data_fixtures.py
(transformers 5.24, tokenizers; about 15 s). Writes tests/fixtures/lm-data/parity.json.
"""

import json
import os
import sys

from transformers import AutoTokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ASSETS = os.environ.get("LOWRANK_ASSETS", os.path.join(ROOT, "assets"))
GGUF_DIR = os.path.join(ASSETS, "SmolLM2-135M-Instruct")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "lm-data")


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def chitchat_conversation(n_messages):
    with open(os.path.join(ASSETS, "chitchat", "chitchat.jsonl"), encoding="utf-8") as f:
        record = json.loads(f.readline())
    return record["messages"][:n_messages]


CONVERSATIONS = [
    [user("What is LoRA?"), assistant("LoRA adds small trainable low-rank matrices to a frozen model.")],
    [{"role": "system", "content": "You are a terse assistant."}, user("Name a prime number."), assistant("7")],
    [
        user("Hi!"),
        assistant("Hello! How can I help?"),
        user("Tell me a joke about cats."),
        assistant("Why did the cat sit on the computer? To keep an eye on the mouse."),
    ],
    [
        user("  Translate 'thank you' to Japanese.\n"),
        assistant(" ありがとう (arigatou) 🙏\n\n"),
        user("And to French?"),
        assistant("Merci."),
    ],
    [user("Say yes."), assistant("Yes."), user("Thanks")],
    chitchat_conversation(6),
]

# Only the Qwen2-style template renders tool calls (an extra field of the message, tojson'd).
TOOL_CALL = [
    user("What's the weather in Paris?"),
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
        ],
    },
]

PROMPT_COMPLETIONS = [
    {"prompt": "Translate to French: cheese\nAnswer:", "completion": " fromage"},
    {"prompt": "2 + 2 =", "completion": " 4"},
    {"prompt": "", "completion": "Once upon a time"},
]

TEXTS = [{"text": "LoRA trains low-rank adapters."}, {"text": "Line one.\nLine two, café ☕"}]


def render(tok, template, messages, generation):
    return tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=generation)


def prefix_spans(tok, template, messages):
    """Character spans of the assistant replies, by rendering prefix by prefix."""
    full = render(tok, template, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tok, template, messages[:i], True)
        through = render(tok, template, messages[: i + 1], False)
        assert through.startswith(before) and full.startswith(through), (i, before, through)
        end = max(len(before), len(through.rstrip()))
        if end > len(before):
            spans.append((len(before), end))
    return full, spans


def overlap_mask(offsets, spans):
    return [int(any(e > a and s < b for a, b in spans)) for s, e in offsets]


def chat_case(tok, name, template, messages):
    full, spans = prefix_spans(tok, template, messages)
    out = tok.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True)
    ids = list(out["input_ids"])
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    assert list(enc["input_ids"]) == ids
    mask = overlap_mask(enc["offset_mapping"], spans)
    assert any(mask), name
    return {"template": name, "messages": messages, "rendered": full, "ids": ids, "loss": mask}


def main():
    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)
    templates = {"smollm2": tok.chat_template}
    for name in ("llama3", "qwen2"):
        with open(os.path.join(FIXTURES, f"{name}.jinja"), encoding="utf-8") as f:
            templates[name] = f.read()
    with open(os.path.join(FIXTURES, "smollm2-generation.jinja"), encoding="utf-8") as f:
        tagged = f.read()

    chats = []
    for name, template in templates.items():
        for messages in CONVERSATIONS + ([TOOL_CALL] if name == "qwen2" else []):
            chats.append(chat_case(tok, name, template, messages))

    # transformers' own assistant mask, from SmolLM2's template with {% generation %} blocks.
    for case in chats:
        if case["template"] != "smollm2":
            continue
        out = tok.apply_chat_template(
            case["messages"], chat_template=tagged, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert render(tok, tagged, case["messages"], False) == case["rendered"]
        assert list(out["input_ids"]) == case["ids"]
        assert list(out["assistant_masks"]) == case["loss"], (case["messages"], out["assistant_masks"], case["loss"])

    eos = tok.eos_token
    completions = []
    for record in PROMPT_COMPLETIONS:
        completion = record["completion"] if record["completion"].endswith(eos) else record["completion"] + eos
        prompt_ids = tok(record["prompt"])["input_ids"]
        ids = tok(record["prompt"] + completion)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids, record
        completions.append({**record, "ids": ids, "loss": [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))})
    texts = []
    for record in TEXTS:
        ids = tok(record["text"] + eos)["input_ids"]
        texts.append({**record, "ids": ids, "loss": [1] * len(ids)})

    question = [user("What is LoRA?")]
    generation = []
    for name, template in templates.items():
        text = render(tok, template, question, True)
        ids = tok.apply_chat_template(question, chat_template=template, add_generation_prompt=True, return_dict=True)["input_ids"]
        generation.append({"template": name, "messages": question, "text": text, "ids": list(ids)})

    import tokenizers
    import transformers

    report = {
        "made_by": "scripts/golden/make_lm_data_fixtures.py",
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "tokenizer": {"bos_token": tok.bos_token, "eos_token": eos, "eos_id": tok.eos_token_id},
        "chats": chats,
        "prompt_completions": completions,
        "texts": texts,
        "generation_prompts": generation,
    }
    path = os.path.join(FIXTURES, "parity.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(chats)} conversations, {len(completions)} prompt/completion pairs, {len(texts)} texts", file=sys.stderr)


if __name__ == "__main__":
    main()
