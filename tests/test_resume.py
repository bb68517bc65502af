"""Checkpoints and exact resume: a run killed with SIGKILL mid-arm and resumed ends identical to the
same run left alone (CPU, fp32): final parameters, ledgers, metrics lines and results.json numbers."""

import json
from dataclasses import replace
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from launcher import LAUNCHER
from rdistill.steps import TIMING_FIELDS

ARGS = ["--budget", "6e10", "--train-size", "300", "--eval-size", "12", "--pack-tokens", "256",
        "--save-every", "5", "--threads", "1", "--max-new-tokens", "24"]


def _rdistill(args, kill_at=None, kill_in_eval=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at:
        env["KILL_AT"] = kill_at
    if kill_in_eval:
        env["KILL_IN_EVAL"] = "1"
    return subprocess.run([sys.executable, "-c", LAUNCHER, *args], env=env, capture_output=True, text=True, timeout=900)


def _metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS}
            for line in path.read_text().splitlines()]


def _numbers(results: dict) -> list[dict]:
    keep = ("name", "lr", "steps", "samples", "train_tokens", "loss_tokens", "final_loss", "stopped_by",
            "budget_used", "flops", "eval", "status", "dtype")
    return [{k: a[k] for k in keep} for a in results["arms"]]


def test_sigkill_mid_arm_then_resume_is_identical_to_an_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    done = _rdistill(["train", *ARGS, "--out", str(a)])
    assert done.returncode == 0, done.stderr[-3000:]

    killed = _rdistill(["train", *ARGS, "--out", str(b)], kill_at="1:13")  # the reasoning arm, step 13
    assert killed.returncode == -signal.SIGKILL
    status = json.loads((b / "results.json").read_text())
    assert [x["name"] for x in status["arms"]] == ["ift"] and status["status"] == "running"
    ckpt = sorted((b / "reasoning" / "checkpoint").glob("step-*"))
    assert [p.name for p in ckpt] == ["step-00000010"]  # every 5 steps; step 13 never finished
    assert len((b / "reasoning" / "metrics.jsonl").read_text().splitlines()) == 12

    resumed = _rdistill(["train", "--resume", str(b)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from its checkpoint at step 10" in " ".join((resumed.stdout + resumed.stderr).split())

    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert rb["status"] == "complete"
    assert _numbers(ra) == _numbers(rb)
    assert rb["arms"][1]["resumed_from_step"] == 10 and ra["arms"][1]["resumed_from_step"] is None
    for arm in ("ift", "reasoning"):
        assert _metrics(a / arm / "metrics.jsonl") == _metrics(b / arm / "metrics.jsonl")
        wa, wb = (load_file(str(d / arm / "model" / "model.safetensors")) for d in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert not (b / arm / "checkpoint").exists()  # removed once the arm is complete
    # the generations (greedy, from identical weights) agree too
    assert (a / "reasoning" / "generations.jsonl").read_text() == (b / "reasoning" / "generations.jsonl").read_text()

    # killed while evaluating the first arm: its training is not repeated, it is evaluated from the
    # checkpoint written when training ended
    c = tmp_path / "c"
    killed = _rdistill(["train", *ARGS, "--out", str(c)], kill_in_eval=True)
    assert killed.returncode == -signal.SIGKILL
    resumed = _rdistill(["train", "--resume", str(c)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rc = json.loads((c / "results.json").read_text())
    assert rc["arms"][0]["resumed_from_step"] == ra["arms"][0]["steps"]
    assert _numbers(rc) == _numbers(ra)
    assert _metrics(c / "ift" / "metrics.jsonl") == _metrics(a / "ift" / "metrics.jsonl")


def test_resume_refuses_a_complete_run_and_extra_options(tmp_path):
    from typer.testing import CliRunner

    from rdistill.cli.main import app

    out = tmp_path / "r"
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--budget", "2e10", "--train-size", "200", "--eval-size", "8", "--no-eval",
                              "--arms", "ift", "--pack-tokens", "256", "--out", str(out)])
    assert res.exit_code == 0, res.output
    arm = json.loads((out / "results.json").read_text())["arms"][0]
    assert arm["epochs"] == arm["samples"] / 200  # passes over the 200 examples (the pool holds both formats)
    assert arm["peak_memory"] > 0 and not (out / "ift" / "checkpoint").exists()
    res = runner.invoke(app, ["train", "--resume", str(out)])
    assert res.exit_code != 0 and "complete: nothing to resume" in res.output
    res = runner.invoke(app, ["train", "--resume", str(out), "--lr", "1e-3"])
    assert res.exit_code != 0 and "--lr" in res.output
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "nothing to resume" in res.output


def test_resume_refuses_when_the_data_changed(tmp_path):
    """A resumed run must train on the data it started on: a data file edited since (or the synthetic
    teacher of another version) would mix two datasets in one run."""
    from typer.testing import CliRunner

    from rdistill.cli.main import app
    from rdistill.data.loading import write_pairs
    from rdistill.synthetic import make_splits

    train, held = make_splits(120, 8, seed=3)
    data, out = tmp_path / "pairs.jsonl", tmp_path / "r"
    write_pairs(data, train + held)
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--budget", "1e10", "--data", str(data), "--eval-size", "8", "--no-eval",
                              "--arms", "ift", "--pack-tokens", "256", "--tokenizer", "builtin", "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert len(results["data"]["digest"]) == 16
    results["status"] = "interrupted"  # as if stopped before the end
    (out / "results.json").write_text(json.dumps(results))

    write_pairs(data, [replace(train[0], ift=train[0].ift + " "), *train[1:], *held])  # one answer edited
    res = runner.invoke(app, ["train", "--resume", str(out)])
    assert res.exit_code != 0 and "other data" in res.output, res.output

    write_pairs(data, train + held)  # the data it started on: resumes
    res = runner.invoke(app, ["train", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "results.json").read_text())["data"]["digest"] == results["data"]["digest"]
