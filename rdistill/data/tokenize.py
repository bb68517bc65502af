"""Tokenizers and the chat-style formatting of one training document.

A document is ``<prompt part><answer part><eos>``; the prompt part comes from the tokenizer's chat
template (``add_generation_prompt=True``) when it has one, else from ``User: ...\\nAssistant: ``.
Only answer tokens and the EOS carry a loss. The built-in tokenizer of the synthetic data lives with
its teacher (rdistill.synthetic); here tokenizers are loaded from local Hugging Face folders.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

FALLBACK_TEMPLATE = "User: {prompt}\nAssistant: "


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A local Hugging Face tokenizer folder, with a pad token (the EOS if it has none) and left padding."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer in {folder} has no EOS token; set eos_token in its tokenizer_config.json")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def prompt_text(tok: PreTrainedTokenizerBase, prompt: str) -> str:
    """The text the model sees before its answer."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return FALLBACK_TEMPLATE.format(prompt=prompt)


def encode_document(tok: PreTrainedTokenizerBase, prompt: str, answer: str) -> tuple[list[int], list[bool]]:
    """Token ids of prompt + answer + EOS, and the loss mask (True on answer tokens and EOS)."""
    p = tok(prompt_text(tok, prompt), add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + a, [False] * len(p) + [True] * len(a)
