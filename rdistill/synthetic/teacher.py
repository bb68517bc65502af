"""The built-in synthetic teacher: paired (ift, reasoning) data that needs no download.

A programmatic teacher answers every generated prompt twice, as the paper's teacher does with
reasoning mode off and on:

- ``ift``: the final answer only, ``\\boxed{...}``;
- ``reasoning``: ``<think>`` a correct step-by-step derivation ``</think>``, then the same boxed answer.

Four families mirror the paper's benchmark families:

- ``math-oe``   multi-operand addition/subtraction, half as word problems. The derivation works column by
                column with carries and borrows, the scratchpad that makes small models add.
- ``math-mc``   "which value is a + b?" with four options A-D (chance 25%), near misses that differ
                from the answer and from each other in the last digit, so the derivation works the
                units column only.
- ``general-oe`` list manipulation on letters (reverse, sort, upper-case, drop a letter) and naming the
                word of a category in a list.
- ``general-mc`` "which word is a <category>?" with four options A-D (chance 25%).

The MC traces check the options in order and stop at the right one, whose line names its own letter
(``C) 63 ends in 3, 3 - 3 = 0, option C``). A tiny student cannot bind an option's letter to its value or
word across the prompt (the earlier traces, which named the letter only at the end, left it at
chance); copying the letter from the start of the line it has just written, it can. A math-mc line
subtracts the needed digit from the option's last one, so that its verdict follows a 0 (a tiny student
did not learn to test two digits for equality, even side by side).

``difficulty`` (1-5) sets the number of operands and digits, and list lengths. Generation is
deterministic in ``seed``. ``make_splits`` returns a training set and a held-out evaluation set that
share no prompt.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import islice
from dataclasses import dataclass

from rdistill.data.schema import PairedExample

FAMILIES = ("math-oe", "math-mc", "general-oe", "general-mc")
MC_FAMILIES = ("math-mc", "general-mc")
CHANCE = {"math-oe": 0.0, "math-mc": 0.25, "general-oe": 0.0, "general-mc": 0.25}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
OPTIONS = "ABCD"

CATEGORIES: dict[str, tuple[str, ...]] = {
    "animal": ("horse", "tiger", "mouse", "eagle", "snake", "whale", "rabbit", "camel", "zebra", "otter"),
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "brown", "pink"),
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum", "melon", "kiwi"),
    "tool": ("hammer", "saw", "drill", "wrench", "chisel", "shovel", "rake", "pliers", "axe", "file"),
    "country": ("france", "japan", "brazil", "kenya", "canada", "india", "norway", "peru", "egypt", "chile"),
    "number": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
}
NAMES = ("Ann", "Bob", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jade")
ITEMS = ("apples", "coins", "books", "stamps", "marbles", "pencils", "cards", "shells")


NEAR_MISSES = (-12, -11, -3, -2, -1, 1, 2, 3, 9, 11, 12, 13)
"""What a math-mc distractor adds to the right value: close in size, never a multiple of 10 away."""


@dataclass(frozen=True)
class Difficulty:
    operands: int
    digits: int
    list_min: int
    list_max: int


def difficulty_spec(level: int) -> Difficulty:
    """What a difficulty level means. Level 2 is the default."""
    if not 1 <= level <= 5:
        raise ValueError(f"difficulty must be between 1 and 5, got {level}")
    return {
        1: Difficulty(2, 1, 2, 3),
        2: Difficulty(2, 2, 2, 4),
        3: Difficulty(3, 2, 4, 6),
        4: Difficulty(3, 3, 5, 8),
        5: Difficulty(4, 3, 6, 10),
    }[level]


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _boxed(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def _pair(prompt: str, steps: list[str], answer: str, family: str) -> PairedExample:
    reasoning = "<think>\n" + "\n".join(steps) + "\n</think>\n" + _boxed(answer)
    return PairedExample(prompt=prompt, ift=_boxed(answer), reasoning=reasoning, family=family, answer=answer)


def _column_steps(a: int, b: int, op: str) -> list[str]:
    """Digit-by-digit addition or subtraction of non-negative a and b (a >= b for subtraction)."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry, digits = [], 0, []
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        if op == "+":
            s = x + y + carry
            extra = f" + {carry}" if carry else ""
            steps.append(f"{x} + {y}{extra} = {s}, write {s % 10} carry {s // 10}")
            digits.append(s % 10)
            carry = s // 10
        else:
            s = x - y - carry
            extra = f" - {carry}" if carry else ""
            if s < 0:
                steps.append(f"{x} - {y}{extra} is below 0, borrow: {s + 10}")
                digits.append(s + 10)
                carry = 1
            else:
                steps.append(f"{x} - {y}{extra} = {s}")
                digits.append(s)
                carry = 0
    if carry and op == "+":
        digits.append(carry)
    return steps


def _arithmetic(rng: random.Random, d: Difficulty, derive: bool = True) -> tuple[list[int], list[str], int, list[str]]:
    """Operands, operators and the result, kept non-negative at every step; plus the column-by-column
    derivation (empty unless ``derive``: math-mc works only the units column)."""
    hi = 10**d.digits - 1
    values = [rng.randint(1, hi) for _ in range(d.operands)]
    ops, total, steps = [], values[0], []
    for v in values[1:]:
        op = "-" if total >= v and rng.random() < 0.5 else "+"
        new = total + v if op == "+" else total - v
        if derive:
            steps += [f"{total} {op} {v}:", *_column_steps(total, v, op), f"so {total} {op} {v} = {new}"]
        ops.append(op)
        total = new
    return values, ops, total, steps


def _math_oe(rng: random.Random, d: Difficulty) -> PairedExample:
    values, ops, total, steps = _arithmetic(rng, d)
    if rng.random() < 0.5:
        expr = " ".join([str(values[0])] + [f"{o} {v}" for o, v in zip(ops, values[1:])])
        prompt = f"Compute {expr}."
    else:
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        parts = [f"{name} has {values[0]} {item}."]
        for o, v in zip(ops, values[1:]):
            parts.append(f"Then {name} {'gets' if o == '+' else 'gives away'} {v}.")
        parts.append(f"How many {item} does {name} have now?")
        prompt = " ".join(parts)
    steps.append(f"The answer is {total}.")
    return _pair(prompt, steps, str(total), "math-oe")


def _search(options: list, answer: object, miss, hit) -> list[str]:
    """The options checked in order up to the right one, which names its own letter on its line: the
    letter is copied from the start of the line just written, not looked up across the prompt.
    ``miss(option)`` is a wrong option's line, ``hit(option)`` the right one's up to " option X"."""
    steps = []
    for letter, option in zip(OPTIONS, options):
        if option == answer:
            steps.append(f"{letter}) {hit(option)} option {letter}")
            break
        steps.append(f"{letter}) {miss(option)}")
    return steps


def _last_digit_steps(values: list[int], ops: list[str]) -> list[str]:
    """The units column of a chain of additions and subtractions: all a math-mc answer needs, since its
    options differ in the last digit."""
    digit = values[0] % 10
    steps = ["last digits: " + " ".join([str(digit)] + [f"{o} {v % 10}" for o, v in zip(ops, values[1:])])]
    for op, v in zip(ops, values[1:]):
        y = v % 10
        steps.append(f"{digit} + {y} = {digit + y}, write {(digit + y) % 10}" if op == "+" else _units_minus(digit, y))
        digit = (digit + y if op == "+" else digit - y) % 10
    return steps


def _units_minus(x: int, y: int) -> str:
    """The units digit of x - y, in the words of the column derivation."""
    return f"{x} - {y} is below 0, borrow: {x + 10 - y}" if x < y else f"{x} - {y} = {x - y}"


def _math_mc(rng: random.Random, d: Difficulty) -> PairedExample:
    values, ops, total, _ = _arithmetic(rng, d, derive=False)
    expr = " ".join([str(values[0])] + [f"{o} {v}" for o, v in zip(ops, values[1:])])
    steps = _last_digit_steps(values, ops)
    wrong: set[int] = set()
    units = {total % 10}
    while len(wrong) < 3:  # near misses, each with its own last digit: only the last digit tells them apart
        cand = total + rng.choice(NEAR_MISSES)
        if cand >= 0 and cand % 10 not in units:
            wrong.add(cand)
            units.add(cand % 10)
    options = [total, *sorted(wrong)]
    rng.shuffle(options)
    letter = OPTIONS[options.index(total)]
    listed = " ".join(f"{OPTIONS[i]}) {v}" for i, v in enumerate(options))
    prompt = f"Which value equals {expr}? {listed}"
    last = total % 10
    steps.append(f"so it ends in {last}")
    # each option's last digit minus the one needed: the verdict follows a 0, not an equality test
    steps.extend(_search(options, total, lambda v: f"{v} ends in {v % 10}, {_units_minus(v % 10, last)}",
                         lambda v: f"{v} ends in {last}, {_units_minus(last, last)},"))
    return _pair(prompt, steps, letter, "math-mc")


def _general_oe(rng: random.Random, d: Difficulty) -> PairedExample:
    n = rng.randint(d.list_min, d.list_max)
    items = rng.sample(LETTERS, n)
    shown = " ".join(items)
    task = rng.choice(("reverse", "sort", "upper", "drop", "pick"))
    if task == "reverse":
        prompt = f"Reverse the list: {shown}"
        out = items[::-1]
        steps = [f"The list has {n} items."] + [f"item {n - i} is {x}" for i, x in enumerate(out)]
    elif task == "sort":
        prompt = f"Sort the list: {shown}"
        out = sorted(items)
        steps, rest = [], list(items)
        for x in out:
            steps.append(f"smallest of {' '.join(rest)} is {x}")
            rest.remove(x)
    elif task == "upper":
        prompt = f"Write in capitals: {shown}"
        out = [x.upper() for x in items]
        steps = [f"{x} becomes {x.upper()}" for x in items]
    elif task == "pick":
        cats = rng.sample(sorted(CATEGORIES), min(max(n, 2), len(CATEGORIES)))
        words = [rng.choice(CATEGORIES[c]) for c in cats]
        category = dict(zip(words, cats))
        rng.shuffle(words)
        prompt = f"Name the {cats[0]} in: {' '.join(words)}"
        out = [w for w in words if category[w] == cats[0]]
        steps = [f"{w} is {_a(category[w])}" for w in words[:words.index(out[0]) + 1]]
    else:
        drop = rng.choice(items)
        prompt = f"Remove {drop} from the list: {shown}"
        out = [x for x in items if x != drop]
        steps = [f"{x} is {'removed' if x == drop else 'kept'}" for x in items]
    answer = " ".join(out)
    steps.append(f"The result is {answer}.")
    return _pair(prompt, steps, answer, "general-oe")


def _general_mc(rng: random.Random, d: Difficulty) -> PairedExample:
    cats = rng.sample(sorted(CATEGORIES), 4)
    target = cats[0]
    words = [rng.choice(CATEGORIES[c]) for c in cats]
    order = list(range(4))
    rng.shuffle(order)
    options = [words[i] for i in order]
    option_cats = [cats[i] for i in order]
    letter = OPTIONS[options.index(words[0])]
    listed = " ".join(f"{OPTIONS[i]}) {w}" for i, w in enumerate(options))
    prompt = f"Which word is {_a(target)}? {listed}"
    category = dict(zip(options, option_cats))
    steps = _search(options, words[0], lambda w: f"{w} is {_a(category[w])}", lambda w: f"{w} is {_a(target)},")
    return _pair(prompt, steps, letter, "general-mc")


_MAKERS = {"math-oe": _math_oe, "math-mc": _math_mc, "general-oe": _general_oe, "general-mc": _general_mc}


def _check_families(families: tuple[str, ...]) -> None:
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")


def _stream(seed: int, difficulty: int, families: tuple[str, ...]) -> Iterator[PairedExample]:
    spec = difficulty_spec(difficulty)
    rng = random.Random(f"rdistill-synth:{seed}:{difficulty}")
    i = 0
    while True:
        yield _MAKERS[families[i % len(families)]](rng, spec)
        i += 1


def generate(n: int, *, seed: int = 0, difficulty: int = 2, families: tuple[str, ...] = FAMILIES) -> list[PairedExample]:
    """``n`` examples, families taken in turn, deterministic in ``seed`` (duplicates possible)."""
    _check_families(families)
    return list(islice(_stream(seed, difficulty, families), n))


def _unique(stream: Iterator[PairedExample], n: int, exclude: set[str], max_tries: int) -> list[PairedExample]:
    out: list[PairedExample] = []
    seen = set(exclude)
    for tries, ex in enumerate(stream):
        if len(out) == n:
            break
        if tries >= max_tries:
            raise ValueError(
                f"could only make {len(out)} distinct prompts of {n} asked; raise --difficulty or ask for fewer"
            )
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
    return out


def make_splits(
    n_train: int,
    n_eval: int,
    *,
    seed: int = 0,
    difficulty: int = 2,
    families: tuple[str, ...] = FAMILIES,
) -> tuple[list[PairedExample], list[PairedExample]]:
    """A training set and a held-out set with no prompt in common, both deterministic in ``seed``.

    The held-out set is drawn first (from its own stream), then training examples whose prompt is in
    it are skipped; within each set prompts are distinct.
    """
    _check_families(families)
    budget = 50 * (n_train + n_eval) + 1000
    held_out = _unique(_stream(seed * 2 + 1, difficulty, families), n_eval, set(), budget)
    train = _unique(_stream(seed * 2, difficulty, families), n_train, {e.prompt for e in held_out}, budget)
    return train, held_out
