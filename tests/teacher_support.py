"""Support for the teacher and eval tests (no tests here): a tiny random-weight teacher saved as a Hugging Face
folder, with a chat template that honours ``enable_thinking`` as Qwen3's does, and the prompts it answers."""

import json

import torch

QWEN3_STYLE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}<|eos|>"
    "{% else %}<|user|>{{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
"""The built-in tokenizer's turns, and Qwen3's switch: enable_thinking=False writes an empty think block."""
PLAIN = QWEN3_STYLE.replace(
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}", "")
"""The same turns with no switch (a system turn is rendered as a user-style turn)."""
OPENS_THINK = QWEN3_STYLE.replace("</think>\n\n{% endif %}{% endif %}",
                                  "</think>\n\n{% else %}<think>\n{% endif %}{% endif %}")
"""A template that opens the think block itself in reasoning mode (as Qwen3-Thinking-2507 does)."""


def save_teacher(folder, template: str | None = QWEN3_STYLE, eos_scale: float = -3.5) -> str:
    """A 2-layer Llama (hidden 32) with the built-in tokenizer (a llama folder: AutoTokenizer reloads it as
    saved). The EOS embedding is scaled so that greedy outputs of 8 prompts at caps of 8 and 16 tokens
    sometimes stop at EOS and sometimes hit the cap (tied embeddings: EOS's logit grows with it). The
    value depends on the random init, hence on the vocabulary size, which follows the synthetic
    teacher's words: when the teacher's traces change, retune it (with the vocabulary of 2026-12-03,
    -3.5 gives both outcomes; 2.2-5.0 and -2.8 never stop)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rdistill.synthetic import builtin_tokenizer

    tok = builtin_tokenizer()
    if template is not None:
        tok.chat_template = template
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    net = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        net.get_input_embeddings().weight[tok.eos_token_id] *= eos_scale
    net.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def write_prompts(path, n: int = 8, seed: int = 0) -> list[dict]:
    """``n`` built-in training prompts (all four families, gold answers) as a prompt file."""
    from rdistill.synthetic import make_splits

    train, _ = make_splits(n, 0, seed=seed)
    rows = [{"prompt": ex.prompt, "family": ex.family, "answer": ex.answer} for ex in train]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
