"""Dispatching a sweep's points: stable ids, --list, one point per worker, locks, a SLURM array, and a
report over a study whose points are still arriving."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rdistill.analysis import scan, write_report
from rdistill.cli.main import app
from rdistill.config import DataConfig, EvalConfig, RunConfig, SweepConfig, TrainConfig
from rdistill.dispatch import ERROR_FILE, PointLocked, lock_path, point_lock, point_state
from rdistill.results import STALE_SECONDS
from rdistill.sweep import points, run_sweep, sweep_point_config

runner = CliRunner()
TINY = ["--train-size", "200", "--eval-size", "8", "--pack-tokens", "256", "--threads", "1", "--max-new-tokens", "8"]


def _flags(study, models="tiny", arms="ift,reasoning", budgets="1e10", *extra):
    return ["sweep", "--out", str(study), "--models", models, "--arms", arms, "--budgets", budgets, *TINY, *extra]


def _cfg(**train):
    base = RunConfig(train=TrainConfig(budget_flops=1.0, pack_tokens=256, **train),
                     data=DataConfig(train_size=200, eval_size=8), eval=EvalConfig(max_new_tokens=8), threads=1)
    return SweepConfig(budgets=(1e10, 2e10), base=base, models=("tiny",), arms=("ift", "reasoning"), seeds=(0, 1))


def _list(study, *flags):
    res = runner.invoke(app, [*(flags or _flags(study)), "--list"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.output.splitlines() if line.strip() and not line.startswith("#")]
    return {int(r[0]): r for r in rows}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def one_done(tmp_path_factory):
    """A study of tiny x (ift, reasoning) x 1e10 whose point 0 (ift) ran alone through --index, over a
    stale lock a dead worker left."""
    study = tmp_path_factory.mktemp("dispatch") / "study"
    ids = _list(study)
    lock = lock_path(Path(ids[0][7]))
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"id": ids[0][1], "pid": _dead_pid(), "host": socket.gethostname()}))
    res = runner.invoke(app, [*_flags(study), "--index", "0"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return study, ids


def test_point_ids_are_stable_and_distinct_across_settings(tmp_path):
    first = [e for _, _, e in points(_cfg(), tmp_path)]
    again = [e for _, _, e in points(_cfg(), tmp_path / "elsewhere")]
    assert [e.id for e in first] == [e.id for e in again]  # another invocation, even another study folder
    assert len({e.id for e in first}) == len(first) == 8  # budget, arm and seed each change the id
    assert all(e.dir.endswith(e.id) for e in first)
    other_lr = [e for _, _, e in points(_cfg(lr=1e-3), tmp_path)]
    assert not {e.id for e in other_lr} & {e.id for e in first}


def test_list_prints_every_point_and_writes_nothing(tmp_path):
    study = tmp_path / "study"
    flags = _flags(study, "tiny", "ift,reasoning", "1e10,2e10", "--seeds", "0,1")
    rows = _list(study, *flags)
    assert rows == _list(study, *flags)
    assert sorted(rows) == list(range(8))
    cfg_entries = {e.index: e for _, _, e in points(_cfg(), study)}  # the library's grid of the same settings
    for i, (index, pid, model, budget, arm, seed, status, folder) in rows.items():
        assert (model, status) == ("tiny", "missing") and folder == str(study / cfg_entries[i].dir)
        assert (pid, float(budget), arm, int(seed)) == (cfg_entries[i].id, cfg_entries[i].budget, cfg_entries[i].arm,
                                                       cfg_entries[i].seed)
    assert not study.exists()


def test_index_runs_one_point_into_the_sweeps_folder_and_point_then_skips_it(one_done):
    study, ids = one_done
    results = sorted(study.rglob("results.json"))
    assert [p.parent for p in results] == [Path(ids[0][7])]
    assert json.loads(results[0].read_text())["status"] == "complete"
    assert not (study / "sweep.json").exists() and not lock_path(Path(ids[0][7])).exists()  # the stale lock: gone
    rows = _list(study)
    assert (rows[0][6], rows[1][6]) == ("complete", "missing")
    before = results[0].read_text()
    res = runner.invoke(app, [*_flags(study), "--point", ids[0][1]], catch_exceptions=False)
    assert res.exit_code == 0 and "skipped" in res.output, res.output
    assert results[0].read_text() == before
    for bad in (["--point", "feedbeef0000"], ["--index", "2"]):
        res = runner.invoke(app, [*_flags(study), *bad], catch_exceptions=False)
        assert res.exit_code == 2 and "--list" in res.output, res.output


def test_the_folder_of_a_point_is_the_full_sweeps(tmp_path):
    cfg = _cfg()
    for point, run_cfg, entry in points(cfg, tmp_path):
        assert Path(sweep_point_config(cfg, point, tmp_path).out) == tmp_path / entry.dir


def test_a_second_worker_refuses_a_point_another_runs(tmp_path):
    study = tmp_path / "study"
    rows = _list(study, *_flags(study, arms="ift"))
    folder = Path(rows[0][7])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom rdistill.dispatch import point_lock\n"
         f"with point_lock(Path({str(folder)!r}), {rows[0][1]!r}):\n"
         "    print('held', flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = runner.invoke(app, [*_flags(study, arms="ift"), "--index", "0"], catch_exceptions=False)
        assert res.exit_code != 0, res.output
        assert "another worker" in res.output and f"pid {holder.pid}" in res.output
        assert not (folder / "results.json").exists() and _list(study, *_flags(study, arms="ift"))[0][6] == "running"
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and not lock_path(folder).exists()


def test_a_full_sweep_skips_a_locked_point(tmp_path):
    cfg = replace(_cfg(), budgets=(1e10,), arms=("ift",), seeds=())
    (point, run_cfg, entry), = points(cfg, tmp_path)
    seen = []
    with point_lock(Path(run_cfg.out), entry.id):
        manifest = run_sweep(cfg, tmp_path, on_point=lambda p, st, i, n: seen.append(st))
        assert point_state(Path(run_cfg.out), entry.id)[0] == "running"
    assert seen == ["locked"] and manifest["points"][0]["status"] == "running"
    assert not (Path(run_cfg.out) / "results.json").exists() and not lock_path(Path(run_cfg.out)).exists()


def test_stale_locks_are_taken_over_and_live_ones_are_not(tmp_path):
    folder = tmp_path / "tiny" / "1e10" / "ift-abc"
    lock = lock_path(folder)
    lock.parent.mkdir(parents=True)

    def plant(owner, age=0.0):
        lock.write_text(json.dumps(owner) if owner is not None else "")
        os.utime(lock, (time.time() - age, time.time() - age))

    plant({"id": "abc", "pid": _dead_pid(), "host": socket.gethostname()})  # dead, on this host
    with point_lock(folder, "abc") as me:
        assert json.loads(lock.read_text())["token"] == me["token"]
        with pytest.raises(PointLocked, match=f"pid {os.getpid()}"):  # alive: this very process
            with point_lock(folder, "abc"):
                pass
    assert not lock.exists()
    plant({"id": "abc", "pid": 1, "host": "elsewhere"})  # another host, heartbeat fresh: alive
    with pytest.raises(PointLocked, match="elsewhere"):
        with point_lock(folder, "abc"):
            pass
    plant({"id": "abc", "pid": 1, "host": "elsewhere"}, age=STALE_SECONDS + 5)  # heartbeat too old: dead
    with point_lock(folder, "abc"):
        pass
    plant(None)  # being written: alive for a while
    with pytest.raises(PointLocked):
        with point_lock(folder, "abc"):
            pass
    plant(None, age=3600)
    with point_lock(folder, "abc"):
        pass


def test_slurm_script_names_every_point_and_runs_it(tmp_path):
    study = tmp_path / "study"
    flags = _flags(study, "tiny", "ift,reasoning", "1e10,2e10")
    rows = _list(study, *flags)
    res = runner.invoke(app, [*flags, "--emit", "slurm", "--sbatch", "time=01:00:00", "--max-running", "2"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    script = study / "sweep.slurm"
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "#SBATCH --array=0-3%2" in text and "#SBATCH --time=01:00:00" in text and "#SBATCH --gpus-per-task=1" in text
    for i, row in rows.items():
        assert f"# point {i}: {row[1]} tiny {row[3]} {row[4]} -" in text
    assert not list(study.rglob("results.json"))
    # run task 2 with a stand-in python that records its command line; those flags select point 2
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {tmp_path / "argv"}\n')
    fake.chmod(0o755)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "PYTHON": str(fake)}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:3] == ["-m", "rdistill", "sweep"] and argv[-2:] == ["--point", rows[2][1]]
    assert _list(study, *argv[2:-2])[2][1] == rows[2][1]
    out_of_range = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "4"},
                                  capture_output=True, text=True)
    assert out_of_range.returncode != 0 and "emit the script again" in out_of_range.stderr
    # several GPUs a point: torchrun, with --parallel ddp in the flags and so in the ids
    res = runner.invoke(app, [*flags, "--emit", "slurm", "--gpus-per-point", "2", "--script", str(tmp_path / "g.sh")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = (tmp_path / "g.sh").read_text()
    assert subprocess.run(["bash", "-n", str(tmp_path / "g.sh")]).returncode == 0
    assert "-m torch.distributed.run --standalone --nproc-per-node 2 -m rdistill sweep" in text
    assert "--parallel ddp" in text and "#SBATCH --gpus-per-task=2" in text
    ddp = _list(study, *flags, "--parallel", "ddp")
    assert all(f"# point {i}: {row[1]} " in text for i, row in ddp.items()) and ddp[0][1] != rows[0][1]
    res = runner.invoke(app, [*flags, "--gpus-per-point", "2"], catch_exceptions=False)
    assert res.exit_code == 2 and "--emit slurm" in res.output


def test_report_lists_the_points_that_are_not_complete(one_done, tmp_path):
    src, _ = one_done
    study = tmp_path / "study"
    shutil.copytree(src, study)
    flags = _flags(study, "tiny,no-such-model")  # 4 points: tiny's two, then no-such-model's two
    rows = _list(study, *flags)
    assert rows[0][6] == "complete"  # the same point as in the grid of tiny alone
    res = runner.invoke(app, [*flags, "--index", "2"], catch_exceptions=False)  # fails before any results.json
    assert res.exit_code == 1 and (Path(rows[2][7]) / ERROR_FILE).is_file()
    # point 1 "crashed": a copy of point 0's results as point 1's, running under a dead pid (its arm complete)
    results = json.loads((Path(rows[0][7]) / "results.json").read_text())
    results.update(status="running", pid=_dead_pid(), host=socket.gethostname(), fingerprint=rows[1][1])
    Path(rows[1][7]).mkdir(parents=True)
    (Path(rows[1][7]) / "results.json").write_text(json.dumps(results))
    with point_lock(Path(rows[3][7]), rows[3][1]):  # point 3: a worker is starting it
        assert [r[6] for _, r in sorted(_list(study, *flags).items())] == ["complete", "crashed", "failed", "running"]
        s = scan(study)
        assert s.grid == {"complete": 1, "crashed": 1, "failed": 1, "running": 1}
        assert [p.source.parent for p in s.points] == [Path(rows[0][7])]  # the crashed run's arm is in no fit
        text = write_report(study, bootstrap=10).read_text()
    for i, status in ((1, "crashed"), (2, "failed"), (3, "running")):
        folder = str(Path(rows[i][7]).relative_to(study))
        assert any(folder in line and f"| {status} |" in line for line in text.splitlines()), (i, status)
    assert "4 (1 complete, 1 running, 1 crashed, 1 failed)" in text
    assert point_state(Path(rows[3][7]), rows[3][1])[0] == "missing"  # its worker let go
