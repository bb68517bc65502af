import pytest

from rdistill.evaluate import extract_boxed, generate_answers, is_correct, summarise
from rdistill.flops.ledger import ModelShape, generation_flops
from rdistill.model import build_student
from rdistill.data.schema import PairedExample
from rdistill.synthetic.teacher import CHANCE, generate


@pytest.mark.parametrize(
    "text,want",
    [
        ("\\boxed{42}", "42"),
        ("x \\boxed{1} then \\boxed{a {b} c}", "a {b} c"),
        ("\\boxed{7} and a broken \\boxed{8", "7"),
        ("no box", None),
        ("\\boxed{}", ""),
    ],
)
def test_extract_boxed(text, want):
    assert extract_boxed(text) == want


def test_scoring_rules():
    oe = PairedExample("p", "\\boxed{a b}", "r", family="general-oe", answer="a b")
    assert is_correct("<think>..</think>\n\\boxed{ a  b }", oe)
    assert not is_correct("a b", oe)
    mc = PairedExample("p", "\\boxed{C}", "r", family="math-mc")
    assert is_correct("\\boxed{c}", mc) and not is_correct("\\boxed{B}", mc)


def test_generation_counts_tokens_and_flops(tok):
    net = build_student("tiny", len(tok), seed=0)
    examples = generate(6, seed=1)
    gens = generate_answers(net, tok, examples, max_new_tokens=9, batch_size=4)
    shape = ModelShape.from_model(net)
    assert len(gens) == 6
    for g, ex in zip(gens, examples):
        assert 1 <= g.output_tokens <= 9
        assert g.prompt_tokens == len(tok(f"<|user|>{ex.prompt}\n<|assistant|>\n", add_special_tokens=False)["input_ids"])
        assert g.flops_exact == generation_flops(shape, g.prompt_tokens, g.output_tokens)["exact"]
    assert net.config._attn_implementation == "rdistill_varlen"
    s = summarise(gens, CHANCE, max_new_tokens=9)
    assert s.n == 6 and set(s.by_family) == {"math-oe", "math-mc", "general-oe", "general-mc"}
    assert s.chance["math-mc"] == 0.25 and s.max_new_tokens == 9
    assert s.inference_flops_per_query.exact == sum(g.flops_exact for g in gens) / 6
