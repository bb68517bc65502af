"""End to end through the command line, on a tiny budget."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from rdistill.cli.main import app

runner = CliRunner()


def _train(out, *extra):
    args = ["train", "--budget", "3e11", "--train-size", "400", "--eval-size", "16", "--out", str(out), "--pack-tokens", "1024"]
    return runner.invoke(app, [*args, *extra], catch_exceptions=False)


def test_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = _train(out)
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete"
    assert [a["name"] for a in results["arms"]] == ["ift", "reasoning"]
    for arm in results["arms"]:
        for key in ("name", "model", "budget_flops", "train_tokens", "loss_tokens", "steps", "samples"):
            assert key in arm
        assert set(arm["flops"]) >= {"exact", "executed", "paper", "six_nd"}
        assert 0.99 * 3e11 <= arm["flops"]["exact"] <= 3e11
        ev = arm["eval"]
        assert set(ev) >= {"accuracy", "by_family", "n", "mean_output_tokens", "inference_flops_per_query"}
        assert ev["n"] == 16 and set(ev["inference_flops_per_query"]) == {"exact", "paper"}
        lines = (out / arm["name"] / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == arm["steps"]
        assert json.loads(lines[-1])["flops"]["exact"] == arm["flops"]["exact"]
        model_dir = out / arm["name"] / "model"
        net = AutoModelForCausalLM.from_pretrained(model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir)
        assert net.config.vocab_size == len(tok)
    # same seed, same results
    again = tmp_path / "again"
    assert _train(again).exit_code == 0
    r2 = json.loads((again / "results.json").read_text())
    for a, b in zip(results["arms"], r2["arms"]):
        assert a["flops"] == b["flops"] and a["final_loss"] == b["final_loss"] and a["eval"]["accuracy"] == b["eval"]["accuracy"]


def test_interrupt_leaves_a_consistent_folder(tmp_path, stop_training_at):
    stop_training_at(2)
    out = tmp_path / "run"
    res = _train(out, "--arms", "reasoning")
    assert res.exit_code == 130
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted"
    arm = results["arms"][0]
    assert arm["status"] == "interrupted" and arm["flops"]["exact"] > 0
    assert len((out / "reasoning" / "metrics.jsonl").read_text().splitlines()) == 2


def test_existing_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = _train(out)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "keep.txt").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--arms", "ift,poetry"], "unknown arm"),
        (["--budget-kind", "chinchilla"], "--budget-kind"),
        (["--samples", "5"], "exactly one"),
    ],
)
def test_bad_options_say_what_to_do(tmp_path, args, message):
    res = _train(tmp_path / "x", *args)
    assert res.exit_code == 2 and message in res.output


def test_bad_data_file_names_file_row_field(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "a", "ift": "b", "reasoning": "c"}\n{"prompt": "a", "ift": "", "reasoning": "c"}\n')
    res = runner.invoke(app, ["train", "--budget", "1e10", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    text = " ".join(res.output.split())  # the console wraps long lines wherever the temporary path ends
    assert "pairs.jsonl" in text and "row 2" in text and "ift" in text


def test_data_synth_writes_the_released_schema(tmp_path):
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--train-size", "200", "--eval-size", "20"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(l) for l in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and {"prompt", "ift", "reasoning"} <= set(rows[0])
    assert "math-oe" in res.output and "reasoning / ift" in res.output


def test_curriculum_arms_train_to_the_same_budget(tmp_path):
    out = tmp_path / "run"
    res = _train(out, "--arms", "seq50,mix25", "--no-eval")
    assert res.exit_code == 0, res.output
    arms = json.loads((out / "results.json").read_text())["arms"]
    assert [(a["name"], a["reasoning_share"], a["schedule"]) for a in arms] == [
        ("seq50", 0.5, "sequential"),
        ("mix25", 0.25, "mixed"),
    ]
    for a in arms:
        assert 0.99 * 3e11 <= a["flops"]["exact"] <= 3e11


def test_report_on_a_folder_without_runs_says_so(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "results.json" in res.output


def test_sweep_rejects_bad_grids(tmp_path):
    res = runner.invoke(app, ["sweep", "--out", str(tmp_path / "s"), "--budgets", "1e12", "--arms", "ift,poetry"])
    assert res.exit_code == 2 and "unknown arm" in res.output
