"""How one teacher is made to answer in two modes, and what its two answers become.

The toggle (``resolve_toggle``), in this order:

1. The chat template's ``enable_thinking`` switch (Qwen3-style), when the template has one: it is
   detected by rendering the same conversation with ``enable_thinking=True`` and ``False`` and comparing
   (a template that ignores the variable renders both alike). Reasoning mode renders with True, IFT mode
   with False (Qwen3 then writes an empty ``<think>\\n\\n</think>\\n\\n`` after the generation prompt).
   ``switch="off"`` ignores it; ``"on"`` requires it.
2. A system prompt per mode (``ift_system``, ``reasoning_system``) and/or a chat template per mode
   (Jinja text, replacing the tokenizer's for that mode). They apply on top of the switch when both are
   given.

If the two modes would still render the same prompt, no toggle is possible: ``ToggleError`` says what to
give. The system prompts and templates only shape what the teacher sees: the stored prompt is the row's
own, so that students are trained and evaluated on it under their own template.

Outputs (``reasoning_answer``, ``ift_answer``): the stored ``reasoning`` is the whole ``<think> ...
</think>`` block then the answer; when the rendered prompt itself opened the block (it ends with
``<think>``), what the prompt opened is put back in front of the output. ``ift`` is the plain answer: an
empty think block at its start is removed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from rdistill.data.schema import Prompt, as_messages
from rdistill.data.tokenize import prompt_text
from rdistill.scoring import CLOSE, OPEN
from rdistill.teacher_config import Switch

PROBE = "What is 2 + 3?"
"""The user turn rendered to detect the switch and to show each mode's prompt in the manifest."""
_EMPTY_THINK = re.compile(rf"^\s*{re.escape(OPEN)}\s*{re.escape(CLOSE)}\s*")


class ToggleError(ValueError):
    """The teacher cannot be made to answer in two different modes with what was given."""


@dataclass(frozen=True)
class ModeFormat:
    """How the prompt of one mode is rendered."""

    system_prompt: str | None = None
    """A system turn added before the prompt (a conversation with its own system turn keeps it)."""
    chat_template: str | None = None
    """A Jinja chat template used instead of the tokenizer's."""
    enable_thinking: bool | None = None
    """The value of the template's ``enable_thinking`` variable; None: not passed."""


@dataclass(frozen=True)
class Toggle:
    """The two modes' formats, how they differ, and what each renders for ``PROBE``."""

    kind: str
    """What switches the mode: ``enable_thinking``, ``system prompts``, ``chat templates``, or several
    joined by `` + ``."""
    ift: ModeFormat
    reasoning: ModeFormat
    example_ift: str
    example_reasoning: str
    template_sha256: str | None
    """The tokenizer's own chat template (a hash), None when it has none."""

    def format(self, mode: str) -> ModeFormat:
        return self.ift if mode == "ift" else self.reasoning


def render(tok: PreTrainedTokenizerBase, prompt: Prompt, fmt: ModeFormat) -> str:
    """The text the teacher continues in a mode: the chat template (``fmt``'s own, if any) over the
    prompt's turns with the generation prompt, ``enable_thinking`` passed when set. Without a template
    or switch this is rdistill.data.tokenize.prompt_text (what training and evaluation render)."""
    if fmt.chat_template is None and fmt.enable_thinking is None:
        return prompt_text(tok, prompt, fmt.system_prompt or None)
    turns = [{"role": m.role, "content": m.content} for m in as_messages(prompt)]
    if fmt.system_prompt and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": fmt.system_prompt})
    options = {} if fmt.enable_thinking is None else {"enable_thinking": fmt.enable_thinking}
    if fmt.chat_template is not None:
        options["chat_template"] = fmt.chat_template
    try:
        return tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True, **options)
    except TemplateError as e:
        which = "the mode's --ift-template/--reasoning-template" if fmt.chat_template else "the teacher's chat template"
        raise ToggleError(f"{which} cannot render a conversation of turns "
                          f"({', '.join(t['role'] for t in turns)}): {e}") from e


def has_thinking_switch(tok: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's chat template renders differently with ``enable_thinking`` True and False."""
    if not getattr(tok, "chat_template", None):
        return False
    on, off = (render(tok, PROBE, ModeFormat(enable_thinking=v)) for v in (True, False))
    return on != off


def resolve_toggle(
    tok: PreTrainedTokenizerBase,
    *,
    ift_system: str | None = None,
    reasoning_system: str | None = None,
    ift_template: str | None = None,
    reasoning_template: str | None = None,
    switch: Switch = "auto",
) -> Toggle:
    """The two modes' formats (see the module docstring); ToggleError when both would render alike."""
    if switch not in ("auto", "on", "off"):
        raise ValueError(f"the thinking switch setting must be auto, on or off, got {switch!r}")
    has_switch = has_thinking_switch(tok)
    if switch == "on" and not has_switch:
        raise ToggleError("--thinking-switch on, but the teacher's chat template has no enable_thinking switch (it "
                          "renders the same prompt with enable_thinking True and False); give --ift-system and "
                          "--reasoning-system (or per-mode templates) instead, with --thinking-switch auto")
    use = has_switch and switch != "off"
    ift = ModeFormat(ift_system, ift_template, False if use else None)
    reasoning = ModeFormat(reasoning_system, reasoning_template, True if use else None)
    kinds = [name for name, differs in (
        ("enable_thinking", use), ("system prompts", (ift_system or None) != (reasoning_system or None)),
        ("chat templates", ift_template != reasoning_template)) if differs]
    example_ift, example_reasoning = render(tok, PROBE, ift), render(tok, PROBE, reasoning)
    if example_ift == example_reasoning and kinds:
        raise ToggleError(
            f"the modes differ only by {' and '.join(kinds)}, but the teacher's chat template renders both alike (it "
            "drops system turns, or ignores what differs); give a chat template per mode (--ift-template / "
            "--reasoning-template FILE) that shows the difference")
    if example_ift == example_reasoning:
        why = ("its chat template has no enable_thinking switch (it renders the same prompt with enable_thinking "
               "True and False)" if not has_switch else "--thinking-switch off was given")
        raise ToggleError(
            f"cannot make the teacher answer in two modes: {why}, and no system prompt or template tells the modes "
            "apart, so both would get the same prompt. Give one per mode, e.g. --ift-system 'Answer with the final "
            "answer only, in \\boxed{}.' --reasoning-system 'First think step by step inside <think> </think>, then "
            "give the final answer in \\boxed{}.' (or --ift-template / --reasoning-template FILE)")
    own = getattr(tok, "chat_template", None)
    sha = hashlib.sha256(own.encode()).hexdigest()[:16] if isinstance(own, str) else None
    return Toggle(" + ".join(kinds), ift, reasoning, example_ift, example_reasoning, sha)


def opened_think(prompt: str) -> str:
    """What a rendered prompt opened of a think block for the output to continue: the text from its last
    ``<think>`` when it ends inside an unclosed block, else ''."""
    i = prompt.rfind(OPEN)
    if i < 0 or CLOSE in prompt[i:] or prompt[i + len(OPEN):].strip():
        return ""
    return prompt[i:]


def reasoning_answer(prompt: str, output: str) -> str:
    """The stored reasoning answer: the think block the prompt opened (if any) followed by the output."""
    opened = opened_think(prompt)
    return opened + output if opened and not output.lstrip().startswith(OPEN) else output.lstrip()


def ift_answer(output: str) -> str:
    """The stored IFT answer: the output without an empty think block at its start."""
    return _EMPTY_THINK.sub("", output, count=1).lstrip()
