"""Answer extraction and equivalence (rdistill.scoring's rules), against known answers."""

import pytest

from rdistill.data.schema import PairedExample
from rdistill.scoring import (
    answers_match,
    extract_answer,
    is_multiple_choice,
    option_letter,
    parse_number,
    same_answer,
    score,
)
from rdistill.synthetic.teacher import FAMILIES, MC_FAMILIES, generate


@pytest.mark.parametrize(
    "output,opened,mode,answer,unclosed",
    [
        ("\\boxed{520}", False, "ift", "520", False),
        ("The sum is 520.", False, "ift", None, False),  # no box: no answer
        ("<think>\n5 + 5 = 10\n</think>\n\\boxed{10}", False, "reasoning", "10", False),
        ("  \n<think>a</think>\\boxed{1}", False, "reasoning", "1", False),  # leading whitespace
        # the bug: a box inside a think block that never closes is not an answer
        ("<think>\nso \\boxed{520} maybe", False, "reasoning", None, True),
        # a box inside a closed think block is not the answer; the one after it is
        ("<think>\\boxed{7}</think>\\boxed{8}", False, "reasoning", "8", False),
        ("<think>\\boxed{7}</think> no box after", False, "reasoning", None, False),
        # the template opened the block: the output only closes it
        ("5 + 5 = 10\n</think>\n\\boxed{10}", True, "reasoning", "10", False),
        ("5 + 5 = \\boxed{10}", True, "reasoning", None, True),
        ("thinking \\boxed{3} </think> \\boxed{4}", False, "reasoning", "4", False),  # closes one it never opened
        # a later think block in the answer part is left out; one that never closes cuts it
        ("\\boxed{1} <think> \\boxed{2} </think> done", False, "ift", "1", False),
        ("\\boxed{1} <think> \\boxed{2}", False, "ift", "1", True),
        ("<think>a</think> \\boxed{1} <think> \\boxed{2}", False, "reasoning", "1", True),
    ],
)
def test_extraction(output, opened, mode, answer, unclosed):
    got = extract_answer(output, opened=opened)
    assert (got.mode, got.answer, got.unclosed) == (mode, answer, unclosed)


MATH_OE = PairedExample("Compute 500 + 20.", "\\boxed{520}", "r", family="math-oe", answer="520")


@pytest.mark.parametrize(
    "boxed",
    ["520", "520.0", "520.00", "$520", "\\$520", "$520$", "\\(520\\)", "+520", "520.", "520 apples",
     "520\\text{ apples}", "\\text{520}", "\\mathbf{520}", "x = 520", "1040/2", "\\frac{1040}{2}", "\\dfrac{1040}{2}",
     "5.2 \\times 10^{2}", "5.2e2", " 520 ", "520\\%", "(520)"],
)
def test_the_same_number_in_other_forms_is_right(boxed):
    assert score(f"<think>\nwork\n</think>\n\\boxed{{{boxed}}}", MATH_OE).correct
    assert score(f"\\boxed{{{boxed}}}", MATH_OE).correct


@pytest.mark.parametrize("boxed", ["521", "52", "5 20", "520x", "520 x", "-520", "5200", "520, 1", "[520]", "\\sqrt{520}"])
def test_other_answers_are_wrong(boxed):
    assert not score(f"\\boxed{{{boxed}}}", MATH_OE).correct


def test_unboxed_or_unfinished_answers_score_no_answer():
    for output in ("520", "The answer is 520.", "<think>\nthe answer is \\boxed{520}", "\\boxed{520"):
        s = score(output, MATH_OE)
        assert s.answer is None and not s.correct


@pytest.mark.parametrize(
    "got,want,equal",
    [
        ("1,234", "1234", True), ("1{,}234", "1234", True), ("1\\,234", "1234", True), ("1 234", "1234", True),
        ("1, 234", "1234", False), ("12 34", "1234", False), ("1,23", "123", False),
        ("0.5", "\\frac{1}{2}", True), ("0.5", "\\frac12", True), (".5", "1/2", True), ("\\tfrac{1}{2}", "2/4", True),
        ("-\\frac{1}{2}", "-0.5", True), ("\\frac{-1}{2}", "-0.5", True), ("\u22120.5", "-1/2", True),
        ("0.5", "-0.5", False), ("1/0", "0", False),
        # a decimal of six or more places equals a non-terminating fraction it agrees with to six places
        ("0.333333", "\\frac{1}{3}", True), ("0.3333333", "1/3", True), ("0.33333", "\\frac{1}{3}", False),
        ("0.33", "\\frac{1}{3}", False), ("0.666667", "\\frac{2}{3}", True), ("0.666666", "\\frac{2}{3}", False),
        ("0.142857", "\\frac17", True), ("0.1428", "\\frac17", False),
        ("0.13", "\\frac{1}{8}", False), ("0.12", "\\frac{1}{8}", False),  # 1/8 is 0.125 exactly: no rounding
        ("1000001", "1000000", False), ("12345678901234567", "12345678901234568", False),
        ("50\\%", "50", True), ("50%", "0.5", True), ("50%", "5", False), ("50 percent", "50", True),
        ("90^\\circ", "90", True), ("90^{\\circ}", "90", True), ("90°", "90", True),
        ("12\\text{ cm}^2", "12", True), ("12 sq. ft.", "12", True), ("\\$1,000.00", "1000", True),
        ("1.2\\cdot 10^{3}", "1200", True), ("1e3", "1000", True), ("1e99999", "1", False),
        ("(1, 2)", "(1,2.0)", True), ("(1,2)", "(2,1)", False), ("(1,2)", "[1,2]", False), ("1, 2, 3", "1,2,3", True),
        ("x + 1", "x+1", True), ("2x", "x2", False), ("\\left(x\\right)", "(x)", True), ("X", "x", False),
        ("\\sqrt{2}", "\\sqrt 2", True), ("\\frac ab", "\\frac{a}{b}", True), ("(-5)", "-5", True),
        ("\\frac{x}{2}", "x/2", False), ("\\sqrt{8}", "2\\sqrt{2}", False),  # no symbolic equivalence
    ],
)
def test_math_equivalence(got, want, equal):
    assert same_answer(got, want, math=True) is equal
    assert same_answer(want, got, math=True) is equal


def test_non_math_open_ended_answers_keep_case_and_word_boundaries():
    assert same_answer("c  b a", "c b a") and same_answer("\\text{c b a}", "c b a")
    assert not same_answer("C B A", "c b a") and not same_answer("cba", "c b a")
    assert not same_answer("a b c", "c b a")
    assert same_answer("1,000", "1000")  # numbers are read as numbers in every open-ended family
    assert same_answer("x+1", "x + 1", math=True) and not same_answer("x+1", "x + 1")


MC = PairedExample("Which value equals 2 + 2? A) 3 B) 4 C) 5 D) 6", "\\boxed{B}", "r", family="math-mc", answer="B")


@pytest.mark.parametrize(
    "boxed,right",
    [("B", True), ("b", True), ("(B)", True), ("B.", True), ("B)", True), ("(b).", True), ("\\text{B}", True),
     ("\\textbf{(B)}", True), ("$B$", True), (" B ", True),
     ("C", False), ("4", False), ("AB", False), ("B) 4", False), ("option", False)],
)
def test_multiple_choice_matches_the_option_letter(boxed, right):
    assert score(f"\\boxed{{{boxed}}}", MC).correct is right


def test_what_counts_as_multiple_choice():
    listed = "Pick one: (A) red (B) blue (C) green"
    assert is_multiple_choice(PairedExample(listed, "\\boxed{B}", "r"), "B")
    assert answers_match("b.", PairedExample(listed, "\\boxed{B}", "r"))
    assert not is_multiple_choice(PairedExample("Is plan B better?", "\\boxed{B}", "r"), "B")
    assert not is_multiple_choice(PairedExample(listed, "\\boxed{blue}", "r"), "blue")
    assert not answers_match("b", PairedExample("Name a letter.", "\\boxed{B}", "r"))
    # an -mc family whose gold is not a letter is compared as an open-ended answer
    assert answers_match("4.0", PairedExample("2 + 2?", "\\boxed{4}", "r", family="x-mc"))
    assert option_letter("\\text{(c)}") == "C" and option_letter("cc") is None


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_the_teachers_own_answers_score_full_marks(difficulty):
    examples = generate(400, seed=difficulty, difficulty=difficulty)
    assert {ex.family for ex in examples} == set(FAMILIES)
    for ex in examples:
        ift, reasoning = score(ex.ift, ex), score(ex.reasoning, ex)
        assert (ift.mode, ift.correct, ift.unclosed) == ("ift", True, False), ex
        assert (reasoning.mode, reasoning.correct, reasoning.unclosed) == ("reasoning", True, False), ex
        # gold answers are in forms the rules handle: letters for MC, integers for math, text otherwise
        if ex.family in MC_FAMILIES:
            assert is_multiple_choice(ex, ex.answer) and option_letter(ex.answer) == ex.answer
        elif ex.family == "math-oe":
            (number,) = parse_number(ex.answer)
            assert number.value == int(ex.answer)
        else:
            assert parse_number(ex.answer) is None
        # ... and cut off inside its think block, the reasoning answer is no answer
        cut = score(ex.reasoning[: ex.reasoning.index("</think>")], ex)
        assert cut.answer is None and cut.unclosed and not cut.correct


def test_the_teachers_answers_are_not_right_for_other_prompts():
    """Full marks above are not vacuous: another example's (different) answer scores wrong."""
    examples = generate(400, seed=7)
    by_family = {f: [ex for ex in examples if ex.family == f] for f in FAMILIES}
    for exs in by_family.values():
        for a, b in zip(exs, exs[1:]):
            assert score(b.reasoning, a).correct is (a.answer == b.answer)
            assert score(b.ift, a).correct is (a.answer == b.answer)


def test_degenerate_outputs_score_in_linear_time():
    """A model stuck repeating ``\\boxed{`` or ``\\text{`` is scored in milliseconds (a quadratic
    extractor took minutes on 20,000 repeats, which a long max_new_tokens allows)."""
    import time

    ex = generate(1)[0]
    start = time.perf_counter()
    for output in ("\\boxed{" * 20000, "\\boxed{" + "\\text{" * 20000 + "1" + "}" * 20001, "<think>" * 20000 + "}" * 9):
        assert not score(output, ex).correct
    assert time.perf_counter() - start < 5.0
