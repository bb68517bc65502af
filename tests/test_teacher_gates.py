"""The quality gates of generated pairs, the mode toggle and the prompt reader, through the library with a
scripted engine (each answer chosen by the test) where the outcome has to be known."""

import json

import pytest

from rdistill.data.loading import DataError
from rdistill.prompts import PromptRow, read_prompts
from rdistill.synthetic import builtin_tokenizer
from rdistill.teacher import generate_pairs
from rdistill.teacher_config import GenerateConfig, ModeSampling
from rdistill.teacher_engines import Completion, make_engine
from rdistill.teacher_format import (
    ModeFormat,
    ToggleError,
    has_thinking_switch,
    ift_answer,
    reasoning_answer,
    render,
    resolve_toggle,
)
from teacher_support import OPENS_THINK, PLAIN, QWEN3_STYLE, read_jsonl, save_teacher, write_prompts

# prompt, family, gold, ift answer (text, stopped at EOS), reasoning answer (text, stopped at EOS)
SCRIPT = [
    ("p1", "math-oe", "83", ("\\boxed{83}", True), ("<think>6 + 77 = 83</think> \\boxed{83}", True)),
    ("p2", "math-oe", "10", ("\\boxed{11}", True), ("<think>so</think>\\boxed{10}", True)),
    ("p3", "math-oe", "5", ("\\boxed{5}", True), ("<think>never closes", False)),
    ("p4", "general-mc", "B", ("\\boxed{(B)}", True), ("<think>x</think> \\boxed{B}", True)),
    ("p5", "all", None, ("\\boxed{7}", True), ("<think>x</think> \\boxed{7.0}", True)),
    ("p6", "math-oe", "4", ("\\boxed{3}", True), ("<think>x</think> \\boxed{3}", True)),
    ("p7", "math-oe", "2", ("\\boxed{2", False), ("<think>x</think> \\boxed{2}", True)),
    ("p8", "math-oe", "9", ("<think>hmm</think> \\boxed{9}", True), ("<think>x</think> \\boxed{9}", True)),
]


class ScriptedEngine:
    """Answers each prompt as SCRIPT says (prompts are told apart by their text, modes by the empty think
    block the IFT prompt ends with); a token is a word."""

    name = "scripted"

    def __init__(self, template=QWEN3_STYLE):
        self.tokenizer = builtin_tokenizer()
        self.tokenizer.chat_template = template
        self.calls = []

    def generate(self, prompts, sampling, seeds):
        self.calls.append(len(prompts))
        out = []
        for text in prompts:
            name = next(s for s in SCRIPT if f">{s[0]}\n" in text)
            answer, ended = name[3] if text.endswith("</think>\n\n") else name[4]
            n = len(answer.split()) + ended
            out.append(Completion(answer, len(text.split()), n, ended, flops_exact=1000 * n, flops_paper=2000 * n))
        return out

    def describe(self):
        return {"engine": self.name}


def _rows():
    return [PromptRow(i + 1, p, fam, gold) for i, (p, fam, gold, _, _) in enumerate(SCRIPT)]


def _cfg(tmp_path, **kw):
    return GenerateConfig(teacher="scripted", prompts="-", out=str(tmp_path / "pairs.jsonl"), batch_size=3,
                          ift=ModeSampling(8), reasoning=ModeSampling(16), **kw)


def test_truncation_disagreement_and_gold_are_counted(tmp_path):
    manifest = generate_pairs(_cfg(tmp_path), _rows(), ScriptedEngine())
    rows = {r["row"]: r for r in read_jsonl(tmp_path / "pairs.generations.jsonl")}
    flag = lambda key: {i for i, r in rows.items() if r[key]}  # noqa: E731
    assert flag("agree") == {1, 4, 5, 6, 8}
    assert flag("passed") == {1, 4, 5}
    assert flag("ift_truncated") == {7} and flag("reasoning_truncated") == {3}
    assert flag("think_closed") == set(rows) - {3} and flag("ift_plain") == set(rows) - {8}
    assert flag("ift_correct") == {1, 3, 4, 8} and flag("reasoning_correct") == {1, 2, 4, 7, 8}
    assert rows[5]["ift_correct"] is None and rows[3]["reasoning_answer"] is None and rows[8]["ift_answer"] == "9"
    c = manifest.counts
    assert (c["agree"], c["passed"], c["kept"], c["with_gold"]) == (5, 3, 3, 7)
    assert (c["ift"]["truncated"], c["reasoning"]["truncated"], c["reasoning"]["think_closed"]) == (1, 1, 7)
    assert (c["ift"]["correct"], c["reasoning"]["correct"], c["ift"]["no_answer"], c["reasoning"]["no_answer"]) == (4, 5, 1, 1)
    fam = c["by_family"]["math-oe"]
    tokens = lambda m: sum(r[f"{m}_tokens"] for r in rows.values() if r["family"] == "math-oe")  # noqa: E731
    assert fam["prompts"] == 6 and fam["reasoning_over_ift"] == pytest.approx(tokens("reasoning") / tokens("ift"))
    assert manifest.flops["ift"]["exact"] == 1000 * c["ift"]["tokens"]
    training = read_jsonl(tmp_path / "pairs.jsonl")
    assert [t["prompt"] for t in training] == ["p1", "p4", "p5"]
    assert training[0] == {"prompt": "p1", "ift": "\\boxed{83}", "reasoning": "<think>6 + 77 = 83</think> \\boxed{83}",
                           "family": "math-oe", "answer": "83"}
    assert "answer" not in training[2]


def test_a_rerun_skips_the_answered_and_keep_all_rewrites_the_training_file(tmp_path):
    engine = ScriptedEngine()
    generate_pairs(_cfg(tmp_path), _rows(), engine)
    assert engine.calls == [3, 3, 3, 3, 2, 2]  # 3 batches x 2 modes
    assert len(read_jsonl(tmp_path / "pairs.jsonl")) == 3
    again = ScriptedEngine()
    manifest = generate_pairs(_cfg(tmp_path, keep="all"), _rows(), again)
    assert again.calls == [] and manifest.counts["prompts"] == 8 and manifest.status == "complete"
    assert [t["prompt"] for t in read_jsonl(tmp_path / "pairs.jsonl")] == [s[0] for s in SCRIPT]
    assert manifest.counts["kept"] == 8 and manifest.settings["keep"] == "all"


def test_a_template_that_opens_the_think_block(tmp_path):
    tok = builtin_tokenizer()
    tok.chat_template = OPENS_THINK
    toggle = resolve_toggle(tok)
    assert toggle.example_reasoning.endswith("<think>\n") and toggle.example_ift.endswith("</think>\n\n")
    prompt = toggle.example_reasoning
    assert reasoning_answer(prompt, "a b</think> \\boxed{1}") == "<think>\na b</think> \\boxed{1}"
    assert reasoning_answer(prompt, "<think>a</think>x") == "<think>a</think>x"
    assert reasoning_answer("<|user|>q\n<|assistant|>\n", " <think>a</think>x") == "<think>a</think>x"
    assert ift_answer("<think>\n\n</think>\n\n\\boxed{3}") == "\\boxed{3}"
    assert ift_answer("<think>no</think>\\boxed{3}") == "<think>no</think>\\boxed{3}"


def test_switch_detection_and_refusals():
    tok = builtin_tokenizer()
    assert not has_thinking_switch(tok)  # the built-in template ignores enable_thinking (and system turns)
    with pytest.raises(ToggleError, match="no enable_thinking switch"):
        resolve_toggle(tok)
    with pytest.raises(ToggleError, match="renders both alike"):
        resolve_toggle(tok, ift_system="Answer.", reasoning_system="Think.")
    toggle = resolve_toggle(tok, reasoning_template=PLAIN + "<think>")
    assert toggle.kind == "chat templates" and toggle.example_reasoning.endswith("<think>")
    tok.chat_template = QWEN3_STYLE
    assert has_thinking_switch(tok)
    assert resolve_toggle(tok, ift_system="Be brief.").kind == "enable_thinking + system prompts"
    with pytest.raises(ToggleError, match="--thinking-switch off"):
        resolve_toggle(tok, switch="off")
    tok.chat_template = PLAIN
    with pytest.raises(ToggleError, match="--thinking-switch on"):
        resolve_toggle(tok, switch="on")
    assert render(tok, "q", ModeFormat(system_prompt="S")) == "<|user|>S\n<|user|>q\n<|assistant|>\n"


def test_sampling_is_seeded_per_prompt_and_mode(tmp_path):
    teacher = save_teacher(tmp_path / "t")
    write_prompts(tmp_path / "p.jsonl")
    engine = make_engine("transformers", teacher)
    rows = read_prompts(tmp_path / "p.jsonl").rows
    texts = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = GenerateConfig(teacher=teacher, prompts="-", out=str(tmp_path / f"{name}.jsonl"), keep="all", seed=seed,
                             batch_size=4, ift=ModeSampling(8, temperature=1.0), reasoning=ModeSampling(8, temperature=1.0))
        generate_pairs(cfg, rows, engine)
        texts[name] = [(r["ift"], r["reasoning"]) for r in read_jsonl(tmp_path / f"{name}.generations.jsonl")]
    assert texts["a"] == texts["b"] and texts["a"] != texts["c"]


def test_prompt_files_with_choices_columns_and_bad_rows(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [{"q": "Pick the animal.", "opts": ["red", "cat", "sky"], "gold": "cat", "family": "general-mc"},
            {"q": "Pick red.", "opts": ["red", "cat"], "gold": 0},
            {"q": [{"role": "user", "content": "Which?"}], "opts": ["x", "y"], "gold": "(B)"},
            {"q": "Sum 2 and 3.", "gold": 5, "family": "math-oe"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = read_prompts(path, columns="prompt=q,choices=opts,answer=gold", need_gold=True).rows
    assert [r.answer for r in got] == ["B", "A", "B", "5"]
    assert got[0].prompt == "Pick the animal.\nA) red\nB) cat\nC) sky" and got[2].prompt[-1].content.endswith("B) y")
    assert [r.row for r in read_prompts(path, columns="prompt=q,answer=gold", families=("math-oe",)).rows] == [4]
    assert len(read_prompts(path, columns="prompt=q,answer=gold", limit=2).rows) == 2
    path.write_text(json.dumps({"q": "Pick.", "opts": ["a", "b"], "gold": "c"}) + "\n" + json.dumps({"q": "Open."}) + "\n")
    with pytest.raises(DataError, match=r"row 1 field 'answer': the gold answer 'c' is none of the 2 choices"):
        read_prompts(path, columns="prompt=q,choices=opts,answer=gold")
    with pytest.raises(DataError, match=r"row 2 field 'answer': no gold answer"):
        read_prompts(path, columns="prompt=q,answer=gold", need_gold=True)
    loaded = read_prompts(path, columns="prompt=q,choices=opts,answer=gold", skip_bad_rows=True)
    assert [r.row for r in loaded.rows] == [2] and "skipped 1 bad rows" in loaded.summary()
    with pytest.raises(DataError, match="--split 'test' only applies"):
        read_prompts(path, split="test")
