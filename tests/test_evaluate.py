import pytest
import torch

from rdistill.data.tokenize import prompt_text
from rdistill.evaluate import Generation, decoder, generate_answers, summarise
from rdistill.scoring import SCORING, extract_boxed, is_correct, score
from rdistill.flops.ledger import ModelShape, generation_flops
from rdistill.model import build_student
from rdistill.data.schema import PairedExample
from rdistill.results import EvalResult
from rdistill.synthetic import builtin_tokenizer
from rdistill.synthetic.teacher import CHANCE, FAMILIES, generate
from rdistill.typed import from_dict, to_dict


@pytest.mark.parametrize(
    "text,want",
    [
        ("\\boxed{42}", "42"),
        ("x \\boxed{1} then \\boxed{a {b} c}", "a {b} c"),
        ("\\boxed{7} and a broken \\boxed{8", "7"),
        ("no box", None),
        ("\\boxed{}", ""),
        ("\\boxed{a \\boxed{b}}", "b"),  # nested: the inner, complete box that opens last
        ("} \\boxed{x} } \\boxed{y", "x"),
    ],
)
def test_extract_boxed(text, want):
    assert extract_boxed(text) == want


def test_scoring_rules():
    oe = PairedExample("p", "\\boxed{a b}", "r", family="general-oe", answer="a b")
    assert is_correct("<think>..</think>\n\\boxed{ a  b }", oe)
    assert not is_correct("a b", oe)
    assert not is_correct("<think>\\boxed{a b}", oe)  # the think block never closed
    mc = PairedExample("p", "\\boxed{C}", "r", family="math-mc")
    assert is_correct("\\boxed{c}", mc) and is_correct("\\boxed{(C)}", mc) and not is_correct("\\boxed{B}", mc)


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
    for g, ex in zip(gens, examples):
        assert g.truncated == (g.unclosed_think or g.hit_limit)
        assert not g.hit_limit or g.output_tokens == 9
        want = score(g.text, ex)
        assert (g.mode, g.answer, g.correct, g.unclosed_think) == (want.mode, want.answer, want.correct, want.unclosed)
    assert s.truncated == sum(g.truncated for g in gens) and s.no_answer == sum(g.answer is None for g in gens)
    assert s.scoring == SCORING


def _scripted(net, tok, outputs):
    """``net`` made to answer each prompt (by its token ids) with ``outputs[prompt ids]``, then EOS."""

    def generate(input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **_):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = tuple(i for i, m in zip(ids, mask) if m)
            rows.append((tok(outputs[prompt], add_special_tokens=False)["input_ids"] + [eos_token_id])[:max_new_tokens])
        width = max(map(len, rows))
        new = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)

    net.generate = generate
    return net


def _teacher_outputs(tok, examples, field, strip=""):
    key = lambda ex: tuple(tok(prompt_text(tok, ex.prompt), add_special_tokens=False)["input_ids"])  # noqa: E731
    return {key(ex): getattr(ex, field).removeprefix(strip) for ex in examples}


@pytest.mark.parametrize("field,mode", [("ift", "ift"), ("reasoning", "reasoning")])
def test_the_teachers_outputs_through_generation_score_full_marks(tok, field, mode):
    examples = generate(24, seed=3)
    net = _scripted(build_student("tiny", len(tok), seed=0), tok, _teacher_outputs(tok, examples, field))
    gens = generate_answers(net, tok, examples, max_new_tokens=400, batch_size=5)
    assert all(g.correct and g.mode == mode and not g.truncated and g.answer == g.gold == ex.answer
               for g, ex in zip(gens, examples))
    s = summarise(gens, CHANCE, max_new_tokens=400)
    assert s.accuracy == 1.0 and set(s.by_family.values()) == {1.0}
    assert s.reasoning_mode == (1.0 if mode == "reasoning" else 0.0)
    assert s.reasoning_mode_by_family == {f: s.reasoning_mode for f in FAMILIES}
    assert s.no_answer == s.truncated == s.unclosed_think == s.hit_max_new_tokens == 0


def test_outputs_cut_by_max_new_tokens_are_truncated_and_unanswered(tok):
    examples = generate(16, seed=4)
    net = _scripted(build_student("tiny", len(tok), seed=0), tok, _teacher_outputs(tok, examples, "reasoning"))
    gens = generate_answers(net, tok, examples, max_new_tokens=6, batch_size=8)
    assert all(g.mode == "reasoning" and g.hit_limit and g.unclosed_think and g.truncated and g.answer is None
               and not g.correct and g.output_tokens == 6 for g in gens)
    s = summarise(gens, CHANCE)
    assert (s.accuracy, s.no_answer, s.truncated, s.unclosed_think, s.hit_max_new_tokens) == (0.0, 16, 16, 16, 16)
    assert s.truncated_by_family == s.no_answer_by_family == {f: 4 for f in FAMILIES}


def test_a_template_that_opens_the_think_block(tok):
    """A chat template whose generation prompt ends in <think>: the output only closes the block."""
    opened = builtin_tokenizer()
    opened.chat_template = opened.chat_template.replace("<|assistant|>\n{% endif %}", "<|assistant|>\n<think>\n{% endif %}")
    examples = generate(8, seed=5)
    assert prompt_text(opened, examples[0].prompt).endswith("<think>\n")
    outputs = _teacher_outputs(opened, examples, "reasoning", strip="<think>\n")
    gens = generate_answers(_scripted(build_student("tiny", len(tok), seed=0), opened, outputs), opened, examples,
                            max_new_tokens=400)
    assert all(g.mode == "reasoning" and g.correct and not g.text.startswith("<think>") for g in gens)


def test_think_tags_that_a_tokenizer_made_special_are_kept():
    t = builtin_tokenizer()
    t.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    ids = t("<think>\nx\n</think>\n\\boxed{3}", add_special_tokens=False)["input_ids"]
    assert t.decode(ids, skip_special_tokens=True) == "\nx\n\n\\boxed{3}"  # what plain decoding would score
    assert decoder(t)(ids + [t.eos_token_id]) == "<think>\nx\n</think>\n\\boxed{3}"


def _gen(family, correct, mode="ift", answer="1", truncated=False):
    return Generation(3, 5, "", correct, family, 10, 10, mode=mode, answer=answer, truncated=truncated)


def test_summary_counts_modes_missing_answers_and_truncation():
    gens = [
        _gen("a", True, "reasoning"), _gen("a", False, "reasoning", None, True), _gen("a", False, "ift", None),
        _gen("b", True), _gen("b", False, "reasoning", "2"), _gen("b", False, "ift", "3", True),
    ]
    s = summarise(gens, {})
    assert s.accuracy == 2 / 6 and s.by_family == {"a": 1 / 3, "b": 1 / 3}
    assert s.reasoning_mode == 0.5 and s.reasoning_mode_by_family == {"a": 2 / 3, "b": 1 / 3}
    assert (s.no_answer, s.no_answer_by_family) == (2, {"a": 2, "b": 0})
    assert (s.truncated, s.truncated_by_family) == (2, {"a": 1, "b": 1})


def test_an_eval_block_from_before_the_new_fields_still_reads():
    s = summarise([_gen("a", True, "reasoning")], {"a": 0.0}, max_new_tokens=7)
    data = to_dict(s)
    assert from_dict(EvalResult, data) == s
    before = ("accuracy", "by_family", "chance", "n", "n_by_family", "mean_output_tokens", "mean_output_tokens_correct",
              "mean_output_tokens_wrong", "mean_prompt_tokens", "inference_flops_per_query", "max_new_tokens")
    old = {k: data[k] for k in before}
    read = from_dict(EvalResult, old)
    assert read.accuracy == 1.0 and read.reasoning_mode is None and read.no_answer is None and read.scoring is None
