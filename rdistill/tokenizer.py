"""Tokenizers and the chat-style formatting of one training document.

The built-in tokenizer (for the synthetic data) is a Hugging Face ``PreTrainedTokenizerFast`` over a
closed word-level vocabulary: every word the synthetic teacher uses, each digit, each printable ASCII
character, each with and without one leading space, plus ``<think>``, ``</think>``, ``\\boxed{`` and
newline. Decoding concatenates tokens, so text round-trips exactly. A word outside the vocabulary
becomes ``<unk>``: for real data, pass that data's own tokenizer (``--tokenizer PATH``).

A document is ``<prompt part><answer part><eos>``; the prompt part comes from the tokenizer's chat
template (``add_generation_prompt=True``) when it has one, else from ``User: ...\\nAssistant: ``.
Only answer tokens and the EOS carry a loss.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<|pad|>", "eos_token": "<|eos|>", "unk_token": "<unk>"}
ROLE_TOKENS = ("<|user|>", "<|assistant|>")
UNIT = r"<think>|</think>|\\boxed\{|[A-Za-z]+|\d|[^\sA-Za-z\d]"
PIECE = rf" ?(?:{UNIT})|\s"
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}<|eos|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
FALLBACK_TEMPLATE = "User: {prompt}\nAssistant: "


def _builtin_vocabulary() -> list[str]:
    from rdistill.synth import FAMILIES, generate

    pieces: set[str] = set()
    for level in range(1, 6):
        for ex in generate(400, seed=level, difficulty=level, families=FAMILIES):
            for text in (ex.prompt, ex.reasoning):
                pieces.update(re.findall(PIECE, text))
    for ch in string.printable:
        pieces.add(ch)
        if not ch.isspace():
            pieces.add(" " + ch)
    pieces.update(["<think>", "</think>", "\\boxed{"])
    return sorted(pieces)


def builtin_tokenizer() -> PreTrainedTokenizerFast:
    """The built-in word-level tokenizer, identical on every machine (its vocabulary is generated)."""
    specials = [SPECIAL_TOKENS["pad_token"], SPECIAL_TOKENS["eos_token"], SPECIAL_TOKENS["unk_token"], *ROLE_TOKENS]
    vocab = {tok: i for i, tok in enumerate(specials + _builtin_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS, additional_special_tokens=list(ROLE_TOKENS))
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def load_tokenizer(path: str | Path | None) -> PreTrainedTokenizerBase:
    """``None`` or ``"builtin"``: the built-in tokenizer; otherwise a local Hugging Face tokenizer folder."""
    if path is None or str(path) == "builtin":
        return builtin_tokenizer()
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
