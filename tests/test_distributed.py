"""Beyond one process: torchrun with 2 CPU processes on gloo, DDP and FSDP2, against one process training
the same global steps (2 packs a step: one per rank, or both by gradient accumulation)."""

import json
import os
import subprocess
import sys

import pytest

from rdistill.distributed import padded_count, world

ARGS = ["--budget", "4e10", "--train-size", "300", "--eval-size", "12", "--pack-tokens", "256",
        "--packs-per-step", "2", "--max-new-tokens", "24", "--threads", "1", "--save-every", "0"]


def _train(out, *launcher, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, *launcher, "-m", "rdistill", "train", *ARGS, *extra, "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), done


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    return out, _train(out)[0]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_train_the_single_process_steps(tmp_path, single, parallel):
    one_dir, one = single
    out = tmp_path / parallel
    two, done = _train(out, "-m", "torch.distributed.run", "--nproc-per-node", "2", extra=["--parallel", parallel])
    assert done.stdout.count("training FLOPs") == 1 and done.stderr.count("run folder:") == 1  # the main rank reports
    for a, b in zip(one["arms"], two["arms"]):
        assert (a["name"], a["steps"], a["samples"], a["stopped_by"]) == (b["name"], b["steps"], b["samples"], b["stopped_by"])
        assert a["stopped_by"] == "budget"
        for kind in ("exact", "paper", "six_nd"):  # one global ledger: the same counts, to the FLOP
            assert a["flops"][kind] == b["flops"][kind], kind
        # a rank short of a pack (the trimmed last step) runs a zero-weight one: executed work, counted
        assert b["flops"]["executed"] >= a["flops"]["executed"]
        la = [json.loads(x)["loss"] for x in (one_dir / a["name"] / "metrics.jsonl").read_text().splitlines()]
        lb = [json.loads(x)["loss"] for x in (out / a["name"] / "metrics.jsonl").read_text().splitlines()]
        assert len(la) == len(lb) == a["steps"]
        assert max(abs(x - y) for x, y in zip(la, lb)) < 1e-5
        assert b["eval"]["n"] == a["eval"]["n"]
    assert not list(tmp_path.glob("rdistill-rank*"))


def test_a_torchrun_job_must_say_how_to_use_its_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--parallel ddp or --parallel fsdp"):
        world("none", "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not world("ddp", "cpu").distributed
    with pytest.raises(ValueError, match="unknown --parallel"):
        world("zero", "cpu")


def test_uneven_packs_are_padded_to_the_busiest_rank():
    assert [padded_count(n, 2) for n in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert padded_count(5, 4) == 2


def test_nproc_reruns_the_command_under_torchrun():
    from rdistill.cli.main import torchrun_argv

    argv = torchrun_argv(["train", "--budget", "1e12", "--nproc", "4", "--out", "r"], 4)
    assert argv[1:6] == ["-m", "torch.distributed.run", "--nproc-per-node", "4", "-m"]
    assert argv[6:] == ["rdistill", "train", "--budget", "1e12", "--out", "r", "--parallel", "ddp"]
    assert torchrun_argv(["train", "--nproc=2", "--parallel", "fsdp"], 2)[-3:] == ["train", "--parallel", "fsdp"]
