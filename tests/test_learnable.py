"""The built-in teacher's families are learnable: a tiny student trained on one family alone, for a short
fixed budget, beats chance by a clear margin (seeded; the guard against a teacher change that makes a
family unlearnable, as the letter lookup of the MC families once was).

Each case is the arm that learns the family fastest at its budget, measured on this project's 2-core
CPU (accuracy at the budget, out of 100 held-out prompts, in the comment); the threshold is far below
it and far above chance, so that floating-point drift between machines cannot flip the test.
"""

import json

import pytest
import torch
from typer.testing import CliRunner

from rdistill.cli.main import app
from rdistill.data.loading import write_pairs
from rdistill.synthetic.teacher import CHANCE, make_splits

runner = CliRunner()

CASES = [
    # family, arm, budget, accuracy at least (measured)
    ("general-mc", "reasoning", "2e12", 0.60),  # 100/100 (2 threads: ~45 s); chance 25%
]


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("family,arm,budget,least", CASES)
def test_a_family_alone_is_learnt_well_above_chance(tmp_path, family, arm, budget, least):
    train, held = make_splits(20000, 100, seed=0, families=(family,))
    write_pairs(tmp_path / "train.jsonl", train)
    write_pairs(tmp_path / "eval.jsonl", held)
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "train.jsonl"), "--eval-data", str(tmp_path / "eval.jsonl"),
                              "--tokenizer", "builtin", "--budget", budget, "--arms", arm, "--seed", "0",
                              "--out", str(tmp_path / "run")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (result,) = json.loads((tmp_path / "run" / "results.json").read_text())["arms"]
    accuracy = result["eval"]["accuracy"]
    assert accuracy >= least > CHANCE[family] + 0.25, f"{family} {arm} at {budget}: {accuracy:.0%}"
