"""The built-in tokenizer for the synthetic teacher's data.

A Hugging Face ``PreTrainedTokenizerFast`` over a closed word-level vocabulary: every word the synthetic
teacher uses, each digit, each printable ASCII character, each with and without one leading space,
plus ``<think>``, ``</think>``, ``\\boxed{`` and newline. Decoding concatenates tokens, so text
round-trips exactly. A word outside the vocabulary becomes ``<unk>``: for real data, pass that data's
own tokenizer (``--tokenizer PATH``). Its chat template wraps a prompt in ``<|user|>`` and the answer in
``<|assistant|>`` ... ``<|eos|>``.
"""

from __future__ import annotations

import re
import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rdistill.synthetic.teacher import FAMILIES, generate

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


def _builtin_vocabulary() -> list[str]:
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
