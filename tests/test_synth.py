import re

import numpy as np
import pytest

from rdistill.scoring import extract_boxed
from rdistill.synthetic.teacher import CATEGORIES, FAMILIES, generate, make_splits


def test_deterministic_by_seed():
    assert generate(40, seed=7) == generate(40, seed=7)
    assert generate(40, seed=7) != generate(40, seed=8)


def test_splits_share_no_prompt_and_are_distinct():
    train, held = make_splits(2000, 200, seed=1)
    assert len(train) == 2000 and len(held) == 200
    tp = {e.prompt for e in train}
    assert len(tp) == 2000
    assert not tp & {e.prompt for e in held}
    assert {e.family for e in held} == set(FAMILIES)


@pytest.mark.parametrize("difficulty", [1, 2, 3, 5])
def test_teacher_is_correct_and_consistent(difficulty):
    for ex in generate(200, seed=difficulty, difficulty=difficulty):
        assert ex.ift == "\\boxed{" + ex.answer + "}"
        assert ex.reasoning.startswith("<think>\n") and "\n</think>\n" in ex.reasoning
        assert extract_boxed(ex.reasoning) == ex.answer == extract_boxed(ex.ift)
        # every "so a op b = c" line of a derivation is true arithmetic
        for a, op, b, c in re.findall(r"so (\d+) ([+-]) (\d+) = (\d+)", ex.reasoning):
            assert (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c)
        if ex.family == "math-oe" and ex.prompt.startswith("Compute"):
            expr = ex.prompt.removeprefix("Compute ").rstrip(".")
            assert str(eval(expr)) == ex.answer  # noqa: S307 (digits and +/- only)
        if ex.family.endswith("-mc"):
            assert ex.answer in "ABCD"
            options = dict(re.findall(r"([ABCD])\) (\S+)", ex.prompt))
            assert len(options) == 4
        if ex.family == "math-mc":
            expr = re.search(r"equals (.*)\?", ex.prompt).group(1)
            assert options[ex.answer] == str(eval(expr))  # noqa: S307
            assert len({v[-1] for v in options.values()}) == 4  # the last digit tells the options apart
            # only the units column is worked, and each checked option is compared with it on its own line
            last = int(re.search(r"so it ends in (\d)\n", ex.reasoning).group(1))
            assert last == eval(expr) % 10  # noqa: S307
            for value, digit, need, rest in re.findall(r"\) (\d+) ends in (\d), \2 - (\d) (.*)", ex.reasoning):
                assert int(digit) == int(value) % 10 and int(need) == last
                difference = int(re.search(r"(\d)(, option [ABCD])?$", rest).group(1))
                assert difference == (int(digit) - last) % 10 and (difference == 0) == rest.endswith(f"option {ex.answer}")
        if ex.family == "general-oe" and ex.prompt.startswith("Name the"):
            category, words = re.match(r"Name the (\w+) in: (.*)", ex.prompt).groups()
            assert [w for w in words.split() if w in CATEGORIES[category]] == [ex.answer]
        if ex.family.endswith("-mc"):
            _check_search(ex, options)


def _check_search(ex, options):
    """An MC trace checks the options in order and stops at the right one, which names its own letter."""
    lines = ex.reasoning.split("\n")
    checked = [ln for ln in lines if re.match(r"[ABCD]\) ", ln)]
    letters = [ln[0] for ln in checked]
    assert letters == list("ABCD"[: "ABCD".index(ex.answer) + 1])
    assert re.search(f"[,:] option {ex.answer}$", checked[-1]) and all("option" not in ln for ln in checked[:-1])
    for ln in checked:
        assert ln.split()[1] == options[ln[0]]  # the option's value or word, as the prompt gives it
    if ex.family == "general-mc":
        target = re.search(r"Which word is an? (\w+)\?", ex.prompt).group(1)
        for ln in checked:
            word, category = re.match(r"[ABCD]\) (\w+) is an? (\w+)", ln).groups()
            assert word in CATEGORIES[category] and (category == target) == (ln is checked[-1])


def test_reasoning_is_5_to_20x_longer_for_math(tok):
    for fam in ("math-oe", "math-mc"):
        ex = generate(200, seed=0, families=(fam,))
        ift = np.mean([len(tok(e.ift)["input_ids"]) + 1 for e in ex])
        reasoning = np.mean([len(tok(e.reasoning)["input_ids"]) + 1 for e in ex])
        assert 5 <= reasoning / ift <= 20, fam


def test_difficulty_knob_lengthens_traces(tok):
    lengths = [np.mean([len(tok(e.reasoning)["input_ids"]) for e in generate(100, difficulty=d)]) for d in (1, 3, 5)]
    assert lengths[0] < lengths[1] < lengths[2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="difficulty"):
        generate(3, difficulty=9)
    with pytest.raises(ValueError, match="unknown families"):
        generate(3, families=("poetry",))
    from rdistill.synthetic.teacher import CATEGORIES, _unique

    with pytest.raises(ValueError, match="only make 5 distinct prompts of 50"):
        _unique(iter(generate(5) * 100), 50, set(), max_tries=400)
