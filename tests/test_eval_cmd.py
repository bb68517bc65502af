"""`rdistill eval`: a run's student re-evaluated gives the run's own evaluation (and a report point); any
checkpoint is scored on a benchmark file by the training-time rules."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from rdistill.analysis.markdown import write_report
from rdistill.analysis.points import scan
from rdistill.cli.main import app
from rdistill.data.schema import PairedExample
from rdistill.eval_record import CheckpointEval
from rdistill.scoring import score
from teacher_support import read_jsonl, save_teacher

runner = CliRunner()


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    args = ["train", "--budget", "1e11", "--train-size", "200", "--eval-size", "16", "--pack-tokens", "1024",
            "--out", str(out)]
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def _eval(*args):
    res = runner.invoke(app, ["eval", "--threads", "1", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.parametrize("data", ["builtin", "file"])
def test_a_runs_student_evaluates_as_its_run_did(run, tmp_path, data):
    out = tmp_path / "ev"
    given = ["--eval-size", "16"] if data == "builtin" else ["--data", str(run / "data" / "eval.jsonl")]
    _eval("--model", str(run / "reasoning" / "model"), "--out", str(out), *given)
    theirs = json.loads((run / "results.json").read_text())
    mine = json.loads((out / "results.json").read_text())
    if data == "file":  # a file declares no chance accuracy; the built-in data does
        assert set(mine["arms"][0]["eval"].pop("chance").values()) == {None}
        theirs["arms"][1]["eval"].pop("chance")
    assert mine["arms"] == [theirs["arms"][1]]  # the arm record, its FLOPs and its evaluation, exactly
    assert mine["fingerprint"] == theirs["fingerprint"] and mine["status"] == "complete"
    assert (out / "reasoning" / "generations.jsonl").read_text() == (run / "reasoning" / "generations.jsonl").read_text()
    record = CheckpointEval.read(out / "eval.json")
    assert record.arm == "reasoning" and record.origin == str((run / "results.json").resolve())
    assert record.train_flops.exact == theirs["arms"][1]["flops"]["exact"] and record.eval.n == 16
    study = scan(out)
    assert len(study.points) == 1 and not study.skipped
    point = study.points[0]
    assert point.train_flops == theirs["arms"][1]["flops"]["exact"] and point.items is not None


def test_any_checkpoint_on_a_benchmark_file(tmp_path):
    model = save_teacher(tmp_path / "model")
    bench = tmp_path / "bench.jsonl"
    rows = [{"prompt": "Compute 6 + 77.", "answer": 83, "family": "math-oe"},
            {"prompt": "Which word is an animal?", "choices": ["red", "cat", "blue"], "answer": "cat", "family": "general-mc"},
            {"prompt": "Which word is a colour?", "choices": ["red", "cat"], "answer": 0},
            {"prompt": [{"role": "user", "content": "Compute 1 + 2."}], "answer": "3"}]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ev"
    res = _eval("--model", model, "--data", str(bench), "--max-new-tokens", "6", "--out", str(out))
    assert "no results.json" in " ".join(res.output.split())
    assert not (out / "results.json").exists()
    record = CheckpointEval.read(out / "eval.json")
    assert record.arm == "checkpoint" and record.train_flops is None and record.origin is None
    assert record.eval.n == 4 and record.eval.n_by_family == {"all": 2, "general-mc": 1, "math-oe": 1}
    assert record.eval.max_new_tokens == 6 and record.parameters.layers == 2
    written = read_jsonl(out / "data" / "eval.jsonl")
    assert [w["answer"] for w in written] == ["83", "B", "A", "3"] and written[1]["prompt"].endswith("C) blue")
    gens = read_jsonl(out / "checkpoint" / "generations.jsonl")
    assert len(gens) == 4
    for g, w in zip(gens, written):
        ex = PairedExample(w["prompt"], w["ift"], w["reasoning"], w["family"], w["answer"])
        assert g["correct"] == score(g["text"], ex).correct and g["gold"] == w["answer"]
        assert 1 <= g["output_tokens"] <= 6 and g["truncated"] == (g["hit_limit"] or g["unclosed_think"])
    assert record.eval.inference_flops_per_query.exact == pytest.approx(sum(g["flops_exact"] for g in gens) / 4)
    assert record.eval.accuracy == sum(g["correct"] for g in gens) / 4


def test_a_checkpoint_without_training_flops_is_placed_on_the_inference_axis(run, tmp_path):
    """eval.json with no results.json beside it: a checkpoint point (train_flops None), listed and plotted on
    the inference axis, never fitted; the study's runs are read as before."""
    study_dir = tmp_path / "study"
    shutil.copytree(run, study_dir / "run")
    released = shutil.copytree(run / "ift" / "model", tmp_path / "released")  # outside its run: no training on record
    _eval("--model", str(released), "--data", str(run / "data" / "eval.jsonl"), "--out", str(study_dir / "released"))
    assert not (study_dir / "released" / "results.json").exists()
    study = scan(study_dir)
    assert [p.arm for p in study.points] == ["ift", "reasoning"] and not study.skipped
    (ck,) = study.checkpoints
    assert ck.arm == "checkpoint" and ck.model == "released" and ck.train_flops is None and ck.budget is None and ck.n == 16
    assert ck.items is not None and ck.inference_flops_per_query > 0
    ift = json.loads((run / "results.json").read_text())["arms"][0]["eval"]
    assert ck.accuracy == ift["accuracy"]  # its own saved tokenizer reloads word for word
    text = write_report(study_dir, bootstrap=50).read_text()
    section = text.split("## Checkpoints without training FLOPs")[1].split("\n## ")[0]
    assert "checkpoint-released" in section and f"{100 * ck.accuracy:.1f}%" in section
    assert "Checkpoints evaluated without training FLOPs on record (eval.json): 1." in text
    assert (study_dir / "report" / "accuracy_vs_inference_flops_overall.png").is_file()
    alone = tmp_path / "alone"
    shutil.copytree(study_dir / "released", alone / "released")
    text = write_report(alone).read_text()  # only a checkpoint: no comparison, still listed and plotted
    assert "nothing to compare yet" in text and "## Checkpoints without training FLOPs" in text
    assert "accuracy_vs_inference_flops_overall.png" in text


def test_bad_input_is_named(tmp_path):
    model = save_teacher(tmp_path / "model")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"prompt": "a", "answer": "1"}) + "\n" + json.dumps({"prompt": "b"}) + "\n")
    res = runner.invoke(app, ["eval", "--model", model, "--data", str(bench)])
    assert res.exit_code == 2 and "row 2 field 'answer': no gold answer" in " ".join(res.output.split())
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--data", str(bench), "--skip-bad-rows"])
    assert res.exit_code == 2 and "no config.json" in " ".join(res.output.split())
