"""Beyond one process: torchrun with 2 CPU processes on gloo, DDP and FSDP2, against one process training
the same global steps (2 packs a step: one per rank, or both by gradient accumulation); a rank killed
mid-arm and the job resumed under torchrun."""

import json
import os
import subprocess
import sys

import pytest

from launcher import write_launcher
from rdistill.distributed import World, gather_objects, padded_count, world
from rdistill.results import RunResults

ARGS = ["--budget", "4e10", "--train-size", "300", "--eval-size", "12", "--pack-tokens", "256",
        "--packs-per-step", "2", "--max-new-tokens", "24", "--threads", "1"]
TORCHRUN = ["-m", "torch.distributed.run", "--nproc-per-node", "2"]


def _rdistill(args, *launcher, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("WORLD_SIZE", None)
    entry = list(launcher) or ["-m", "rdistill"]
    return subprocess.run([sys.executable, *entry, *args], env=env, capture_output=True, text=True, timeout=900)


def _train(out, *launcher, extra=()):
    done = _rdistill(["train", *ARGS, "--save-every", "0", *extra, "--out", str(out)], *launcher, "-m", "rdistill")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), done


def _losses(folder, arm):
    return [json.loads(x)["loss"] for x in (folder / arm / "metrics.jsonl").read_text().splitlines()]


LOSS_TOLERANCE = {"ddp": 1e-5, "fsdp": 2e-4}
"""Largest loss difference from one process over ~18 steps: DDP all-reduces whole gradients in one
bucket order; FSDP2 reduce-scatters per layer, a different fp32 summation order that drifts further
(5.8e-5 on the synthetic data of 2026-12)."""


def _assert_same_training(one_dir, one, two_dir, two, tolerance=1e-5, relative=False):
    """The same global steps: steps, samples, stop, every FLOP count but executed, and the losses (within
    ``tolerance``, absolute or relative)."""
    for a, b in zip(one["arms"], two["arms"], strict=True):
        assert (a["name"], a["steps"], a["samples"], a["stopped_by"]) == (b["name"], b["steps"], b["samples"], b["stopped_by"])
        assert a["stopped_by"] == "budget"
        for kind in ("exact", "paper", "six_nd"):  # one global ledger: the same counts, to the FLOP
            assert a["flops"][kind] == b["flops"][kind], kind
        # a rank short of a pack (the trimmed last step) runs a zero-weight one: executed work, counted
        assert b["flops"]["executed"] >= a["flops"]["executed"]
        la, lb = _losses(one_dir, a["name"]), _losses(two_dir, a["name"])
        assert len(la) == len(lb) == a["steps"]
        assert max(abs(x - y) / (abs(x) if relative else 1) for x, y in zip(la, lb)) < tolerance


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    return out, _train(out)[0]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_train_the_single_process_steps(tmp_path, single, parallel):
    one_dir, one = single
    out = tmp_path / parallel
    two, done = _train(out, *TORCHRUN, extra=["--parallel", parallel])
    assert done.stdout.count("training FLOPs") == 1 and done.stderr.count("run folder:") == 1  # the main rank reports
    _assert_same_training(one_dir, one, out, two, tolerance=LOSS_TOLERANCE[parallel])
    for a, b in zip(one["arms"], two["arms"]):
        # the held-out set is split over the ranks and gathered back into its order
        ga, gb = ([json.loads(x) for x in (d / a["name"] / "generations.jsonl").read_text().splitlines()]
                  for d in (one_dir, out))
        assert [g["prompt"] for g in ga] == [g["prompt"] for g in gb] and b["eval"]["n"] == a["eval"]["n"] == 12
        same = sum(x["text"] == y["text"] for x, y in zip(ga, gb))
        assert same >= 10, f"{same} of 12 outputs agree"  # greedy from weights within 1e-5 of each other
    assert not list(tmp_path.glob("rdistill-rank*"))


def test_fsdp_mixed_precision_follows_dtype(tmp_path):
    """--dtype bf16 under FSDP2: fp32 shards gathered in bf16 (MixedPrecisionPolicy) train like one bf16
    process with fp32 master weights, up to bf16 rounding of the gradients."""
    one, _ = _train(tmp_path / "one", extra=["--dtype", "bf16"])
    two, _ = _train(tmp_path / "two", *TORCHRUN, extra=["--dtype", "bf16", "--parallel", "fsdp"])
    _assert_same_training(tmp_path / "one", one, tmp_path / "two", two, tolerance=3e-2, relative=True)
    assert {a["dtype"] for a in two["arms"]} == {"bfloat16"}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "two" / "ift" / "model" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}  # saved in the run's dtype


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_dead_rank_stops_the_job_and_it_resumes_under_torchrun(tmp_path, single, parallel):
    one_dir, one = single
    out = tmp_path / parallel
    launcher = write_launcher(tmp_path)
    args = ["train", *ARGS, "--save-every", "5", "--parallel", parallel, "--out", str(out)]
    # rank 1 is SIGKILLed in step 13 of the reasoning arm: torchrun stops rank 0, which marks the run
    killed = _rdistill(args, *TORCHRUN, launcher, env={"KILL_AT": "1:13", "KILL_RANK": "1"})
    assert killed.returncode != 0
    assert "Signal 9 (SIGKILL)" in killed.stderr or "exitcode: -9" in killed.stderr, killed.stderr[-3000:]
    status = json.loads((out / "results.json").read_text())
    assert status["arms"][0]["status"] == "complete"
    # rank 0 marks the run when the collective fails under it; when torchrun's SIGKILL comes first (rank
    # 0 blocked in a collective), results.json still says running with a dead pid: crashed, also resumable
    live = RunResults.read(out / "results.json").live_status()
    assert live in ("interrupted", "failed", "crashed"), live
    if live != "crashed":
        assert "rdistill train --resume" in killed.stdout + killed.stderr
    assert [p.name for p in (out / "reasoning" / "checkpoint").glob("step-*")] == ["step-00000010"]

    resumed = _rdistill(["train", "--resume", str(out)], *TORCHRUN, "-m", "rdistill")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "resuming from its checkpoint at step 10" in " ".join((resumed.stdout + resumed.stderr).split())
    two = json.loads((out / "results.json").read_text())
    assert two["status"] == "complete" and two["arms"][1]["resumed_from_step"] == 10
    _assert_same_training(one_dir, one, out, two, tolerance=LOSS_TOLERANCE[parallel])


def test_a_sharded_checkpoint_reshards_to_three_ranks_but_not_to_one(tmp_path, single):
    one_dir, one = single
    out = tmp_path / "run"
    launcher = write_launcher(tmp_path)
    args = ["train", *ARGS, "--arms", "ift", "--save-every", "5", "--parallel", "fsdp", "--out", str(out)]
    killed = _rdistill(args, *TORCHRUN, launcher, env={"KILL_AT": "0:8", "KILL_RANK": "1"})
    assert killed.returncode != 0 and (out / "ift" / "checkpoint" / "step-00000005" / "sharded").is_dir()
    alone = _rdistill(["train", "--resume", str(out)])
    assert alone.returncode != 0
    assert "resumes under torchrun with --parallel fsdp" in " ".join((alone.stdout + alone.stderr).split())
    # torch.distributed.checkpoint reshards the 2-rank checkpoint over 3 ranks; the global steps are the same
    three = _rdistill(["train", "--resume", str(out), "--nproc", "3"])
    assert three.returncode == 0, three.stdout[-2000:] + three.stderr[-3000:]
    two = json.loads((out / "results.json").read_text())
    assert two["arms"][0]["resumed_from_step"] == 5
    _assert_same_training(one_dir, {"arms": one["arms"][:1]}, out, two, tolerance=LOSS_TOLERANCE["fsdp"])


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


def test_gathered_shares_come_back_in_order():
    assert gather_objects([1, 2, 3], World()) == [1, 2, 3]


def test_nproc_reruns_the_command_under_torchrun():
    from rdistill.cli.main import torchrun_argv

    argv = torchrun_argv(["train", "--budget", "1e12", "--nproc", "4", "--out", "r"], 4)
    assert argv[1:6] == ["-m", "torch.distributed.run", "--nproc-per-node", "4", "-m"]
    assert argv[6:] == ["rdistill", "train", "--budget", "1e12", "--out", "r", "--parallel", "ddp"]
    assert torchrun_argv(["train", "--nproc=2", "--parallel", "fsdp"], 2)[-3:] == ["train", "--parallel", "fsdp"]
    assert "--parallel" not in torchrun_argv(["train", "--resume", "r", "--nproc", "2"], 2)  # the run keeps its own


def test_the_slurm_example_is_valid_bash_and_resumes(tmp_path):
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "docs" / "cluster" / "train.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "srun" in text and "torchrun" in text and "train --resume" in text and "--parallel fsdp" in text
