"""Scoring an output against a held-out example: its mode, its answer, and whether it is right.

Scoring rules (``SCORING`` names this version; results.json records it):

1. Mode. An output is in *reasoning mode* if it starts with ``<think>`` (leading whitespace aside), or
   if the prompt's template already opened the block (the prompt ends with ``<think>``), or if it
   closes a block it never opened (``</think>`` before any ``<think>``); otherwise it is in *IFT mode*.
2. Answer part. IFT mode: the whole output. Reasoning mode: only the text after the first
   ``</think>``; an output whose think block never closes has **no answer** and is **truncated**. Any
   later ``<think>...</think>`` block in the answer part is left out, and a later block that never
   closes cuts the answer part where it opens (the output counts as truncated).
3. Answer. The content of the last complete ``\\boxed{...}`` in the answer part; none: no answer,
   scored wrong. An output is also counted truncated when generation hit ``max_new_tokens`` without EOS.
4. Multiple choice (family ending in ``-mc``, or a gold answer that is one capital letter the prompt
   lists as an option, ``A) ... B) ...``): the option letter, case-insensitive; ``B``, ``b``, ``(B)``,
   ``B.``, ``B)`` and ``\\text{B}`` are the same answer.
5. Everything else (math families and open-ended ones generally) after LaTeX clean-up (``$...$``,
   ``\\(...\\)``, spacing commands, ``\\left``/``\\right`` and ``\\text{}``-like wrappers removed,
   ``\\dfrac``/``\\tfrac`` read as ``\\frac``):

   - if both sides read as a number they are compared as exact rationals: a sign, thousands separators
     (``1,234``, ``1{,}234``, ``1\\,234``), decimals (``520.0`` = ``520``), ``\\frac{a}{b}``,
     ``\\frac12`` and ``a/b``, ``e``/``\\times 10^{n}`` exponents; a leading currency sign (``$520``),
     a leading ``x =``, a degree sign, and a trailing unit (anything in ``\\text{}``, or up to three plain
     words of two or more letters: ``520 apples``, ``12 cm``) are dropped, so units are *not* checked;
     ``(520)`` is 520; ``50\\%`` equals both ``50`` and ``0.5``. A decimal of six or more places also
     equals a fraction with no finite decimal expansion when they agree to six places, as math-verify
     rounds (``0.333333`` = ``\\frac{1}{3}``; ``0.33`` does not);
   - else two comma-separated lists in the same brackets match item by item under these rules;
   - else the texts are compared: families named ``math*`` ignore whitespace (except between two
     digits), the others collapse it; case always counts (``A B`` is not ``a b``).

Expressions are not compared symbolically (``x/2`` is not ``\\frac{x}{2}``). The rules are pure string
and rational arithmetic in one pass over the output: deterministic, no timeouts, about 0.1 ms an answer
on a CPU (math-verify, which adds symbolic comparison, needs sympy and a signal-based timeout).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from rdistill.data.schema import PairedExample

SCORING = "rdistill-2: answer after </think>, last \\boxed{}, math-aware equivalence, MC letters"
BOX = "\\boxed{"
OPEN, CLOSE = "<think>", "</think>"
Mode = Literal["reasoning", "ift"]
_BOX_OR_BRACE = re.compile(r"\\boxed\{|[{}]")
ROUNDED_PLACES = 6
"""A decimal of at least this many places equals a fraction it agrees with to this many (as math-verify)."""
MAX_NUMBER_CHARS = 200
"""A longer answer is not read as a number (keeps the arithmetic bounded whatever a model writes)."""


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (nested braces allowed), or None. One pass: the
    complete box that opens last wins (the inner one of nested boxes)."""
    stack: list[int | None] = []
    best: tuple[int, int] | None = None
    for m in _BOX_OR_BRACE.finditer(text):
        if m.group() == "}":
            start = stack.pop() if stack else None
            if start is not None and (best is None or start > best[0]):
                best = (start, m.start())
        else:
            stack.append(m.end() if m.group() == BOX else None)
    return None if best is None else text[best[0] : best[1]]


@dataclass(frozen=True)
class Extraction:
    mode: Mode
    answer: str | None
    """The last boxed answer of the answer part; None: no answer."""
    unclosed: bool
    """A think block the output opened never closed."""


def answer_part(output: str, *, opened: bool = False) -> tuple[Mode, str | None, bool]:
    """(mode, the text an answer may come from or None, whether a think block never closed): rules 1-2."""
    body = output.lstrip()
    first_close, first_open = body.find(CLOSE), body.find(OPEN)
    if body.startswith(OPEN):
        body = body[len(OPEN):]
    elif not (opened or (first_close >= 0 and (first_open < 0 or first_close < first_open))):
        return ("ift", *_drop_thoughts(output))
    close = body.find(CLOSE)
    if close < 0:
        return "reasoning", None, True
    return ("reasoning", *_drop_thoughts(body[close + len(CLOSE):]))


def _drop_thoughts(text: str) -> tuple[str, bool]:
    """``text`` without its think blocks, cut where one never closes; and whether one did not."""
    kept = []
    while (i := text.find(OPEN)) >= 0:
        kept.append(text[:i])
        j = text.find(CLOSE, i)
        if j < 0:
            return "".join(kept), True
        text = text[j + len(CLOSE):]
    kept.append(text)
    return "".join(kept), False


def extract_answer(output: str, *, opened: bool = False) -> Extraction:
    """Mode and answer of a generated ``output``; ``opened``: the prompt itself ended in ``<think>``."""
    mode, part, unclosed = answer_part(output, opened=opened)
    return Extraction(mode, None if part is None else extract_boxed(part), unclosed)


_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))
_WRAPPER = re.compile(r"\\(?:text(?:rm|normal|bf|it|up)?|math(?:rm|bf|it|sf)|mbox|operatorname|boxed|fbox)\s*\{")
_WRAPPER_OR_BRACE = re.compile(rf"{_WRAPPER.pattern}|[{{}}]")
_UNIT_WRAPPER = r"\\(?:text|textrm|textnormal|mathrm|mbox)\s*\{[^{}]*\}"
_DEC = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
_FRAC = re.compile(r"\\frac(?:\{([^{}]+)\}|(\d))(?:\{([^{}]+)\}|(\d))")
_TIMES_TEN = re.compile(r"(.+?)(?:\\times|\\cdot|\*|×)10\^(?:\{([+-]?\d{1,4})\}|([+-]?\d))")
_PLAIN_UNIT = re.compile(r"(?<=[\d}.])\s+[A-Za-z]{2,}\.?(?:/[A-Za-z]+)?(?:\s+[A-Za-z]{2,}\.?){0,2}(?:\^\{?\d\}?)?$")


def _unwrap(s: str) -> str:
    """``s`` with every ``\\text{x}``-like wrapper (and a nested ``\\boxed{x}``) replaced by ``x`` (one pass)."""
    out, stack, last = [], [], 0
    for m in _WRAPPER_OR_BRACE.finditer(s):
        out.append(s[last : m.start()])
        last, tok = m.end(), m.group()
        if tok == "}":
            if not (stack and stack.pop()):
                out.append(tok)
        else:
            stack.append(tok != "{")
            if tok == "{":
                out.append(tok)
    out.append(s[last:])
    return "".join(out)


def _clean(s: str) -> str:
    """Math delimiters, spacing commands, \\left/\\right and \\displaystyle removed; \\dfrac read as \\frac."""
    s = s.strip()
    stripped = True
    while stripped:
        stripped = False
        for a, b in _DELIMITERS:
            if len(s) >= len(a) + len(b) and s.startswith(a) and s.endswith(b):
                s, stripped = s[len(a) : len(s) - len(b)].strip(), True
                break
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",").replace("\u2212", "-")
    s = re.sub(r"\\(?:left|right|displaystyle)(?![A-Za-z])", "", s)
    s = re.sub(r"\\(frac|sqrt)\s*([0-9A-Za-z])", r"\\\1{\2}", s)  # \frac12, \sqrt 2: braced
    s = re.sub(r"(\\frac\{[^{}]*\})\s*([0-9A-Za-z])", r"\1{\2}", s)
    s = re.sub(r"\\[,;:! ]|\\q?quad(?![A-Za-z])|~", " ", s)
    return " ".join(s.split())


@dataclass(frozen=True)
class _Number:
    value: Fraction
    places: int | None
    """Decimal places as written (``0.33``: 2); None for integers written without a point, fractions
    and exponents."""


def _decimal(s: str) -> _Number | None:
    sign = -1 if s.startswith("-") else 1
    s = s[1:] if s[:1] in "+-" else s
    if not re.fullmatch(_DEC, s):
        return None
    d = Decimal(s.replace(",", ""))  # valid: _DEC matched
    if abs(d.adjusted()) > 1000:
        return None
    places = len(s.split(".")[1]) if "." in s and "e" not in s.lower() else None
    return _Number(sign * Fraction(d), places)


def _number_value(s: str) -> _Number | None:
    """``s`` (no whitespace) as a number: decimal, fraction or exponent form, with an optional sign."""
    sign = 1
    while s[:1] in ("+", "-"):
        sign, s = (-sign if s[0] == "-" else sign), s[1:]
    if m := _TIMES_TEN.fullmatch(s):
        mantissa, exp = _decimal(m.group(1)), int(m.group(2) or m.group(3))
        if mantissa is None or abs(exp) > 1000:
            return None
        return _Number(sign * mantissa.value * Fraction(10) ** exp, None)
    if m := _FRAC.fullmatch(s):
        num, den = _decimal(m.group(1) or m.group(2)), _decimal(m.group(3) or m.group(4))
    elif s.count("/") == 1:
        num, den = (_decimal(part) for part in s.split("/"))
    else:
        n = _decimal(s)
        return None if n is None else _Number(sign * n.value, n.places)
    if num is None or den is None or den.value == 0:
        return None
    return _Number(sign * num.value / den.value, None)


def parse_number(answer: str) -> tuple[_Number, ...] | None:
    """The values ``answer`` reads as (two for a percentage: 50% is 50 and 0.5), or None (rule 5)."""
    s = _clean(answer)
    if len(s) > MAX_NUMBER_CHARS:
        return None
    unit = re.search(rf"(?:\s*{_UNIT_WRAPPER}(?:\^\{{?\d\}}?)?)+$", s)
    if unit and re.search(r"\d", s[: unit.start()]):
        s = s[: unit.start()]
    s = _unwrap(s).strip()
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    s = re.sub(r"^(?:[A-Za-z](?:_\{?\w+\}?)?\s*)?=\s*", "", s)
    percent = re.search(r"\s*\\?%$", s)
    if percent:
        s = s[: percent.start()]
    s = re.sub(r"^([+-]?)\s*(?:\\\$|\$|€|£|¥)\s*", r"\1", s)
    s = _PLAIN_UNIT.sub("", s)
    if s.startswith("(") and s.endswith(")") and "," not in s:
        s = s[1:-1].strip()
    if re.fullmatch(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?", s):
        s = s.replace(" ", "")
    if re.search(r"[\d,.]\s+[\d,.]", s):
        return None
    n = _number_value("".join(s.split()))
    if n is None:
        return None
    return (n, _Number(n.value / 100, None)) if percent else (n,)


def _terminates(q: Fraction) -> bool:
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _numbers_equal(a: _Number, b: _Number) -> bool:
    if a.value == b.value:
        return True
    for dec, other in ((a, b), (b, a)):
        if dec.places is not None and dec.places >= ROUNDED_PLACES and not _terminates(other.value):
            if round(other.value, ROUNDED_PLACES) == round(dec.value, ROUNDED_PLACES):
                return True
    return False


def option_letter(answer: str) -> str | None:
    """The option letter ``answer`` names (``B``, ``b``, ``(B)``, ``B.``, ``B)``, ``\\text{B}``), upper-cased."""
    m = re.fullmatch(r"\(?([A-Za-z])\)?[.:)]?", _unwrap(_clean(answer)).strip())
    return m.group(1).upper() if m else None


def is_multiple_choice(ex: PairedExample, gold: str) -> bool:
    """Rule 4: family ``*-mc``, or a one-capital-letter gold answer that the prompt lists as an option."""
    if ex.family.endswith("-mc"):
        return True
    letter = gold.strip()
    if not re.fullmatch(r"[A-Z]", letter):
        return False
    text = ex.messages[-1].content
    return all(re.search(rf"(?:^|[\s(]){x}[).:]\s", text) for x in {"A", "B", letter})


_BRACKETS = {"(": ")", "[": "]", "{": "}", "\\{": "\\}"}


def _split_list(s: str) -> tuple[str, list[str]] | None:
    """(bracket, items) of a comma-separated list of two or more items, or None."""
    bracket = ""
    for a, b in _BRACKETS.items():
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            bracket, s = a, s[len(a) : len(s) - len(b)]
            break
    items, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if ch == "," and depth == 0:
            items.append(s[start:i])
            start = i + 1
    items.append(s[start:])
    return (bracket, [x.strip() for x in items]) if len(items) >= 2 else None


def _text_form(s: str, math: bool) -> str:
    s = _unwrap(_clean(s))
    if math:
        s = re.sub(r"(?<=\d)\s+(?=\d)", "\0", s)
        return "".join(s.split()).replace("\0", " ")
    return " ".join(s.split())


def same_answer(got: str, want: str, *, math: bool = False) -> bool:
    """Rule 5: open-ended equivalence of an extracted answer and the gold one."""
    a, b = parse_number(got), parse_number(want)
    if a is not None and b is not None:
        return any(_numbers_equal(x, y) for x in a for y in b)
    if a is None and b is None:
        la, lb = _split_list(_clean(got)), _split_list(_clean(want))
        if la and lb and la[0] == lb[0] and len(la[1]) == len(lb[1]):
            return all(same_answer(x, y, math=math) for x, y in zip(la[1], lb[1]))
    return _text_form(got, math) == _text_form(want, math)


def find_gold_answer(ex: PairedExample) -> str | None:
    """The gold answer: the ``answer`` column, else the last ``\\boxed{}`` of ``ift``; None if neither."""
    return ex.answer if ex.answer is not None else extract_boxed(ex.ift)


def gold_answer(ex: PairedExample) -> str:
    boxed = find_gold_answer(ex)
    if boxed is None:
        raise ValueError(f"held-out example has no 'answer' and its ift has no \\boxed{{}}: {ex.messages[-1].content[:80]!r}")
    return boxed


def answers_match(got: str, ex: PairedExample) -> bool:
    """An extracted answer against ``ex``'s gold answer (rules 4-5)."""
    want = gold_answer(ex)
    if is_multiple_choice(ex, want):
        letter = option_letter(want)
        if letter is not None:
            return option_letter(got) == letter
    return same_answer(got, want, math=ex.family.startswith("math"))


@dataclass(frozen=True)
class Score(Extraction):
    correct: bool = False


def score(output: str, ex: PairedExample, *, opened: bool = False) -> Score:
    """Mode, extracted answer and correctness of ``output`` for ``ex`` (the module's rules)."""
    got = extract_answer(output, opened=opened)
    correct = got.answer is not None and answers_match(got.answer, ex)
    return Score(got.mode, got.answer, got.unclosed, correct)


def is_correct(output: str, ex: PairedExample, *, opened: bool = False) -> bool:
    return score(output, ex, opened=opened).correct
