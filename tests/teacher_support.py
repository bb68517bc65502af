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


def save_teacher(folder, template: str | None = QWEN3_STYLE) -> str:
    """A 2-layer Llama (hidden 32) with the built-in tokenizer (a llama folder: AutoTokenizer reloads it as
    saved), whose greedy outputs of the 8 prompts of ``write_prompts`` sometimes stop at EOS within their
    caps (8 tokens without thinking, 16 with: those of tests/test_teacher.py) and sometimes run on. The
    random model echoes its last token; EOS's embedding (tied: its first-token logit is linear in it) is
    scaled by a factor between two prompts' thresholds (the factor at which EOS would take their first
    token), the first that gives both outcomes when generating: a fixed factor broke whenever the
    synthetic teacher's words, hence the vocabulary and the random init, changed."""
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
    eos = net.get_input_embeddings().weight[tok.eos_token_id]
    original = eos.detach().clone()
    with torch.no_grad():
        eos.zero_()
        thresholds = sorted(_eos_threshold(net, tok, original, prompt, thinking)
                            for prompt in _prompts() for thinking in (False, True))
        for scale in [(a + b) / 2 for a, b in zip(thresholds, thresholds[1:])]:
            eos.copy_(original * scale)
            stops = [tok.eos_token_id in _greedy(net, tok, prompt, thinking, 16 if thinking else 8)
                     for prompt in _prompts() for thinking in (False, True)]
            if 0 < sum(stops) < len(stops):
                break
        else:
            raise AssertionError("no scale of the EOS embedding gives both outcomes; see save_teacher")
    net.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _prompts(n: int = 8, seed: int = 0) -> list[str]:
    from rdistill.synthetic import make_splits

    return [ex.prompt for ex in make_splits(n, 0, seed=seed)[0]]


def _ids(tok, prompt: str, thinking: bool) -> torch.Tensor:
    """The prompt as the teacher is given it: the chat template, reasoning mode on or off."""
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True,
                                   enable_thinking=thinking)
    return tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def _eos_threshold(net, tok, eos, prompt: str, thinking: bool) -> float:
    """The factor on ``eos`` (EOS's embedding) from which EOS's logit ties the best one at the first token."""
    ids = _ids(tok, prompt, thinking)
    hidden = net.model(ids).last_hidden_state[0, -1]
    logits = net.lm_head(hidden)
    logits[tok.eos_token_id] = -float("inf")
    return (logits.max() / (hidden @ eos)).item()


def _greedy(net, tok, prompt: str, thinking: bool, n: int) -> list[int]:
    ids = _ids(tok, prompt, thinking)
    out = []
    for _ in range(n):
        out.append(net(ids).logits[0, -1].argmax().item())
        if out[-1] == tok.eos_token_id:
            break
        ids = torch.cat([ids, torch.tensor([out[-1:]])], dim=1)
    return out


def write_prompts(path, n: int = 8, seed: int = 0) -> list[dict]:
    """``n`` built-in training prompts (all four families, gold answers) as a prompt file."""
    from rdistill.synthetic import make_splits

    train, _ = make_splits(n, 0, seed=seed)
    rows = [{"prompt": ex.prompt, "family": ex.family, "answer": ex.answer} for ex in train]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
