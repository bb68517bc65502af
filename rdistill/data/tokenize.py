"""Tokenizers and the chat-style formatting of one training document.

A document is ``<prompt part><answer part><eos>``; the prompt part comes from the tokenizer's chat
template (``add_generation_prompt=True``) over the prompt's turns (a string prompt is one user turn)
when it has one, else from ``User: ...\\nAssistant: `` (``System: ...`` and ``Assistant: ...`` lines
for other turns). The same text starts each held-out prompt in evaluation. An optional system prompt
is given to the template, or (``''``) the template's default one is removed. Only answer tokens and
the EOS carry a loss. The built-in tokenizer of the synthetic data lives with its teacher
(rdistill.synthetic); here tokenizers are loaded from local Hugging Face folders.
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import TemplateError
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from rdistill.data.schema import Prompt, as_messages

FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
"""Line prefixes of each role's turn when the tokenizer has no chat template."""


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A local Hugging Face tokenizer folder, with a pad token (the EOS if it has none) and left padding."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
    tok = _tokenizer_class(folder).from_pretrained(folder, local_files_only=True)
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer in {folder} has no EOS token; set eos_token in its tokenizer_config.json")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


GENERIC_FAST = ("PreTrainedTokenizerFast", "TokenizersBackend")
"""``tokenizer_class`` values of a plain ``tokenizer.json`` tokenizer with no model-specific class (the
built-in tokenizer saves one of these, depending on the transformers version)."""


def _tokenizer_class(folder: Path) -> type:
    """The generic fast tokenizer when the folder's own tokenizer_config.json asks for it, else
    AutoTokenizer. AutoTokenizer alone would let a ``config.json`` beside it (a saved student: model_type
    qwen2) pick Qwen2Tokenizer, which re-reads a word-level vocabulary as byte-level BPE."""
    config = folder / "tokenizer_config.json"
    try:
        wanted = json.loads(config.read_text()).get("tokenizer_class") if config.exists() else None
    except (OSError, ValueError) as e:
        raise ValueError(f"{config} is not readable JSON ({e}); rewrite it with tokenizer.save_pretrained") from e
    fast = wanted in GENERIC_FAST and (folder / "tokenizer.json").exists()
    return PreTrainedTokenizerFast if fast else AutoTokenizer


def prompt_text(tok: PreTrainedTokenizerBase, prompt: Prompt, system_prompt: str | None = None) -> str:
    """The text the model sees before its answer.

    ``system_prompt``: None renders the prompt as the template does by itself (with its default system
    turn, if it has one); a text becomes the system turn; ``''`` removes the template's default system
    turn (see ``_without_default_system``). A conversation with its own system turn keeps it either way.
    """
    turns = [{"role": m.role, "content": m.content} for m in as_messages(prompt)]
    own_system = turns[0]["role"] == "system"
    if system_prompt and not own_system:
        turns.insert(0, {"role": "system", "content": system_prompt})
    if not getattr(tok, "chat_template", None):
        return "".join(f"{FALLBACK_ROLES[t['role']]}: {t['content']}\n" for t in turns) + "Assistant: "
    if system_prompt == "" and not own_system:
        return _without_default_system(tok, turns)
    return _render(tok, turns, add_generation_prompt=True)


def encode_document(
    tok: PreTrainedTokenizerBase, prompt: Prompt, answer: str, system_prompt: str | None = None
) -> tuple[list[int], list[bool]]:
    """Token ids of prompt + answer + EOS, and the loss mask (True on answer tokens and EOS).
    ``system_prompt`` as in ``prompt_text``."""
    p = tok(prompt_text(tok, prompt, system_prompt), add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + a, [False] * len(p) + [True] * len(a)


def _render(
    tok: PreTrainedTokenizerBase, turns: list[dict[str, str]], add_generation_prompt: bool, **tokens: str
) -> str:
    """The chat template over ``turns``; ``tokens`` stand in for the tokenizer's special tokens."""
    try:
        return tok.apply_chat_template(turns, add_generation_prompt=add_generation_prompt, tokenize=False, **tokens)
    except TemplateError as e:
        roles = ", ".join(t["role"] for t in turns)
        raise ValueError(
            f"the tokenizer's chat template refuses a conversation of turns ({roles}): {e}; give prompts it "
            f"takes (if it has no system role: no --system-prompt and no system turns in the data)"
        ) from e


def _without_default_system(tok: PreTrainedTokenizerBase, turns: list[dict[str, str]]) -> str:
    """``turns`` rendered with no system turn at all, not even the one a template adds by default.

    Templates like Qwen2.5's add a default system turn when none is given, and render a given empty one
    as an empty block. So: render with an empty system turn, and cut off the front what that turn alone
    renders, except a BOS the template writes first (told apart by rendering with a stand-in BOS: some
    tokenizers' BOS is also the token that opens a turn). This is checked, not assumed: the rest must
    also end the rendering without a system turn, else the template folds the system turn into another
    one and nothing can be cut cleanly (an error). Templates that ignore system turns stay as they are.
    """
    empty, bos = [{"role": "system", "content": ""}], "\x00BOS\x00"
    cannot = "--system-prompt '' cannot remove the default system prompt of the tokenizer's chat template: it"
    try:
        block = _render(tok, empty, add_generation_prompt=False, bos_token=bos)
    except ValueError as e:
        raise ValueError(f"{cannot} refuses a system turn alone ({e.__cause__}); leave --system-prompt out") from e
    full = _render(tok, empty + turns, add_generation_prompt=True, bos_token=bos)
    bare = _render(tok, turns, add_generation_prompt=True, bos_token=bos)
    rest = full[len(block):]
    if not full.startswith(block) or not bare.endswith(rest):
        raise ValueError(f"{cannot} does not render a system turn as a block of its own; leave --system-prompt "
                         f"out, or give one")
    return ((bos if block.startswith(bos) else "") + rest).replace(bos, tok.bos_token or "")
