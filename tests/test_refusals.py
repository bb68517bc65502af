"""What rdistill refuses, before anything is written, and how a run folder's life is told apart.

One test per class of issue 11 done so far: bad values are one clear error and exit 2 with no
traceback and no folder (classes 2 and 8); the student and evaluation are checked before the folder is
touched (class 1, in part); --overwrite deletes only run folders, SIGTERM/SIGINT exit codes, interrupted
arms record their steps, dead runs read as crashed (class 5); sweep points are keyed by their settings,
stay inside the study, and one sweep at a time (class 6).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rdistill.cli.main import app
from rdistill.config import DataConfig, RunConfig, TrainConfig
from rdistill.results import DataSummary, RunResults
from rdistill.sweep import SweepLocked, SweepPoint, point_config, point_status, study_lock

runner = CliRunner()
TINY = ["--train-size", "200", "--eval-size", "8", "--max-new-tokens", "8"]


def _said(res) -> str:
    """The command's output with the console's line wrapping undone."""
    return " ".join(res.output.split())


def _bert(tmp_path):
    from transformers import AutoConfig

    path = tmp_path / "bert"
    AutoConfig.for_model("bert", vocab_size=600, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=40).save_pretrained(path)
    return path


def _bad_config(tmp_path):
    path = tmp_path / "broken"
    path.mkdir()
    (path / "config.json").write_text("{not json")
    return path


BAD_COMMANDS = {
    "train-size 0": (["train", "--budget", "1e10", "--train-size", "0"], "--train-size"),
    "eval-size -5": (["train", "--budget", "1e10", "--eval-size", "-5"], "--eval-size"),
    "budget inf": (["train", "--budget", "inf"], "budget"),
    "budget nan": (["train", "--budget", "nan"], "budget"),
    "lr 0": (["train", "--budget", "1e10", "--lr", "0"], "--lr"),
    "lr negative": (["train", "--budget", "1e10", "--lr-ift", "-0.1"], "--lr-ift"),
    "threads -1": (["train", "--budget", "1e10", "--threads", "-1"], "--threads"),
    "pack-tokens 0": (["train", "--budget", "1e10", "--pack-tokens", "0"], "--pack-tokens"),
    "stats pack-tokens 0": (["data", "stats", "--pack-tokens", "0", "--train-size", "20"], "--pack-tokens"),
    "stats overflow bogus": (["data", "stats", "--overflow", "bogus"], "--overflow"),
    "flops num-docs 0": (["flops", "--num-docs", "0"], "--num-docs"),
    "flops pack-tokens 0": (["flops", "--pack-tokens", "0", "--no-measure", "--num-docs", "10"], "--pack-tokens"),
    "a BERT config": (["train", "--budget", "1e10", "--model", _bert], "not a decoder"),
    "a broken config.json": (["train", "--budget", "1e10", "--model", _bad_config], "cannot read"),
    "no held-out rows": (["train", "--budget", "1e10", "--eval-size", "0"], "--no-eval"),
}


@pytest.mark.parametrize("case", sorted(BAD_COMMANDS))
def test_a_bad_value_is_one_clear_error_and_nothing_is_written(case, tmp_path):
    args, message = BAD_COMMANDS[case]
    args = [a(tmp_path) if callable(a) else a for a in args]
    out = tmp_path / "run"
    if args[0] == "train":
        args = [*args, "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in _said(res) and "Traceback" not in res.output
    assert not out.exists()


def test_data_synth_with_no_rows_writes_nothing(tmp_path):
    res = runner.invoke(app, ["data", "synth", "--train-size", "0", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "--train-size" in _said(res)
    assert not (tmp_path / "d").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    res = runner.invoke(app, ["train", "--budget", "1e10", *TINY, "--out", str(target)])
    assert res.exit_code == 2 and "is a file" in _said(res) and target.read_text() == "keep"


@pytest.mark.parametrize("where", ["folder", "cwd"])
def test_overwrite_never_deletes_what_is_not_a_run_folder(where, tmp_path, monkeypatch):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    if where == "cwd":
        monkeypatch.chdir(precious)
        out = "."
    else:
        out = str(precious)
    res = runner.invoke(app, ["train", "--budget", "1e10", *TINY, "--out", out, "--overwrite"])
    assert res.exit_code == 2 and "will not delete" in _said(res)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_overwrite_replaces_a_run_folder_and_interrupts_record_steps(tmp_path, stop_training_at):
    """A run folder is replaced; SIGTERM (Terminated) exits 143 with the arm's steps and FLOPs kept."""
    from rdistill.cli.main import Terminated

    out = tmp_path / "run"
    base = ["train", "--budget", "2e10", *TINY, "--arms", "ift", "--no-eval", "--out", str(out)]
    assert runner.invoke(app, base).exit_code == 0
    stop_training_at(3, Terminated)
    res = runner.invoke(app, [*base, "--overwrite"])
    assert res.exit_code == 143
    results = RunResults.read(out / "results.json")
    arm = results.arms[0]
    assert results.status == "interrupted" and arm.status == "interrupted"
    assert arm.steps == 3 and arm.flops.exact > 0 and arm.samples > 0


def _results(**kw) -> RunResults:
    cfg = RunConfig(train=TrainConfig(budget_flops=1e9))
    return RunResults(config=cfg, data=DataSummary(source="synthetic", train=1, eval=1), environment={},
                      started="2026-01-01T00:00:00", **kw)


def test_a_dead_run_reads_as_crashed_not_running():
    live = _results()
    live.beat()
    assert live.live_status() == "running"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = _results(pid=int(dead.stdout), host=socket.gethostname(), heartbeat="2026-01-01T00:00:00")
    assert gone.live_status() == "crashed"
    elsewhere = _results(pid=1, host="another-machine", heartbeat="2026-01-01T00:00:00")
    assert elsewhere.live_status() == "crashed"
    assert _results(status="complete").live_status() == "complete"


def _base(**train) -> RunConfig:
    return RunConfig(train=TrainConfig(budget_flops=1e10, **train), data=DataConfig(train_size=100, eval_size=4))


def test_sweep_points_are_keyed_by_their_settings(tmp_path):
    study = tmp_path / "study"
    point = SweepPoint("tiny", 2e10, "ift")
    a = point_config(_base(), point, study)
    assert point_config(_base(), point, study) == a
    for other in (_base(lr=1e-3), RunConfig(train=_base().train, data=_base().data, seed=1),
                  RunConfig(train=_base().train, data=DataConfig(train_size=100, eval_size=4, difficulty=3))):
        b = point_config(other, point, study)
        assert b.out != a.out and b.fingerprint() != a.fingerprint()
    near = point_config(_base(), SweepPoint("tiny", 2.001e10, "ift"), study)
    assert near.out != a.out
    # a complete run of other settings in the folder is not this point's; the same settings are,
    # though the run resolved automatic values (the pack capacity) in the config it saved
    _results(status="complete", fingerprint=b.fingerprint()).write(tmp_path / "results.json")
    assert point_status(tmp_path, a.fingerprint()) is None
    assert point_status(tmp_path) == "complete"
    resolved = RunConfig(train=TrainConfig(budget_flops=1e10, pack_tokens=1024), data=_base().data)
    RunResults(config=resolved, data=DataSummary(source="synthetic", train=1, eval=1), environment={},
               started="now", status="complete", fingerprint=a.fingerprint()).write(tmp_path / "results.json")
    assert point_status(tmp_path, a.fingerprint()) == "complete"


def test_sweep_folders_stay_inside_the_study_and_do_not_collide(tmp_path):
    study = tmp_path / "study"
    one, two = tmp_path / "a" / "ckpt", tmp_path / "b" / "ckpt"
    f1 = point_config(_base(), SweepPoint(str(one), 1e10, "ift"), study).out
    f2 = point_config(_base(), SweepPoint(str(two), 1e10, "ift"), study).out
    assert f1 != f2
    for model in ("../escape", "..", "/etc", "a/../../b"):
        folder = os.path.realpath(point_config(_base(), SweepPoint(model, 1e10, "ift"), study).out)
        assert folder.startswith(os.path.realpath(study) + os.sep), model


def test_one_sweep_at_a_time(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    with study_lock(study):
        with pytest.raises(SweepLocked, match="another sweep"):
            with study_lock(study):
                pass
    assert not (study / ".sweep.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (study / ".sweep.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with study_lock(study):  # a dead owner's lock is taken over
        pass
    with study_lock(study):
        res = runner.invoke(app, ["sweep", "--out", str(study), "--budgets", "1e10", "--models", "tiny",
                                  "--arms", "ift", "--train-size", "100", "--eval-size", "4"])
    assert res.exit_code == 2 and "another sweep" in _said(res)


def _pairs(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _synthetic_rows(n, seed=0):
    from rdistill.synthetic import generate

    return [ex.to_row() for ex in generate(n, seed=seed)]


def _prepare(**fields):
    from rdistill.run import prepare

    train = fields.pop("train", {"budget_flops": 1e10})
    return prepare(RunConfig.from_dict({"out": "unused", "train": train, **fields}))


def test_held_out_rows_without_a_gold_answer_are_named_before_anything_runs(tmp_path):
    rows = _synthetic_rows(60)
    for r in rows:
        r["ift"] = r["ift"].replace("\\boxed{", "{")
        r.pop("answer")
    path = _pairs(tmp_path, rows)
    with pytest.raises(ValueError, match=r"no gold answer.*pairs.jsonl: row \d+.*--no-eval"):
        _prepare(data={"path": str(path), "eval_size": 4})
    assert _prepare(data={"path": str(path), "eval_size": 4}, eval={"enabled": False}).source.held_out


def test_documents_over_capacity_are_found_for_every_arm_with_the_files_row(tmp_path, tok):
    from rdistill.data.tokenize import encode_document

    rows = _synthetic_rows(40)
    path = _pairs(tmp_path, rows)
    with pytest.raises(ValueError, match=r"reasoning documents are longer than --pack-tokens 40") as err:
        _prepare(data={"path": str(path), "eval_size": 4}, arms=["ift", "reasoning"],
                 train={"budget_flops": 1e10, "pack_tokens": 40})
    row = int(str(err.value).split("pairs.jsonl: row ")[1].split(";")[0].split()[0])
    named = rows[row - 1]  # the file's own line number
    assert len(encode_document(tok, named["prompt"], named["reasoning"])[0]) > 40
    prep = _prepare(data={"path": str(path), "eval_size": 4}, arms=["ift", "reasoning"],
                    train={"budget_flops": 1e10, "pack_tokens": 40, "overflow": "truncate"})
    assert prep.source.summary.over_capacity["reasoning"] > 0 and prep.source.summary.overflow == "truncate"


def test_nothing_is_dropped_silently(tmp_path):
    rows = _synthetic_rows(80)
    path = _pairs(tmp_path, rows + rows[:10])  # 10 duplicate prompts
    said = []
    from rdistill.run import prepare

    prep = prepare(RunConfig.from_dict({"out": "x", "train": {"budget_flops": 1e10},
                                        "data": {"path": str(path), "eval_size": 9}}), said.append)
    summary = prep.source.summary
    assert summary.train + summary.eval + summary.removed_overlap == 90
    assert any("removed" in s and "held out" in s for s in said) == (summary.removed_overlap > 0)
    with pytest.raises(ValueError, match="drop every"):
        _prepare(train={"budget_flops": 1e10, "pack_tokens": 8, "overflow": "drop"}, data={"train_size": 50})
    with pytest.raises(ValueError, match="cannot train one document"):
        _prepare(train={"budget_flops": 1e3}, data={"train_size": 50})


def test_text_the_tokenizer_cannot_represent_stops_the_run(tmp_path):
    rows = [{"prompt": f"Explain photosynthesis in plants, please ({i})",
             "ift": "Chlorophyll absorbs sunlight \\boxed{yes}",
             "reasoning": "<think>Leaves contain chloroplasts</think> \\boxed{yes}"} for i in range(40)]
    path = _pairs(tmp_path, rows)
    with pytest.raises(ValueError, match="unknown to the tokenizer.*--tokenizer"):
        _prepare(data={"path": str(path), "eval_size": 4})
    prep = _prepare(data={"path": str(path), "eval_size": 4, "max_unknown_share": 1.0})
    assert prep.source.summary.unknown_token_share > 0.1


def test_an_over_long_field_is_a_bad_row_not_a_memory_blowup(tmp_path):
    rows = _synthetic_rows(30)
    rows[6]["prompt"] = "Compute " + "1 + " * 5000 + "1."
    path = _pairs(tmp_path, rows)
    with pytest.raises(ValueError, match=r"row 7 field 'prompt'.*--max-field-chars 1,000"):
        _prepare(data={"path": str(path), "eval_size": 2, "max_field_chars": 1000})
    prep = _prepare(data={"path": str(path), "eval_size": 2, "max_field_chars": 1000, "skip_bad_rows": True})
    assert prep.source.summary.skipped == 1


def test_a_mapped_optional_column_must_exist_in_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rdistill.data.loading import DataError, load_pairs

    rows = _synthetic_rows(5)
    jsonl = _pairs(tmp_path, rows)
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    for path in (jsonl, parquet):
        with pytest.raises(DataError, match="famliy"):
            load_pairs(path, columns={"family": "famliy"})


def test_an_arm_that_takes_no_step_is_an_error_not_complete(tok):
    import numpy as np

    from rdistill.model import build_student
    from rdistill.synthetic import make_splits
    from rdistill.train import train_arm
    from rdistill.data.tokenize import encode_document

    train, _ = make_splits(20, 1, seed=2)
    docs = [tuple(np.asarray(x) for x in encode_document(tok, e.prompt, e.ift)) for e in train]
    net = build_student("tiny", len(tok))
    with pytest.raises(ValueError, match="no optimizer step"):
        train_arm(net, docs, TrainConfig(budget_flops=1e3, pack_tokens=512), lr=1e-3)
    with pytest.raises(ValueError, match="were dropped"):
        train_arm(net, docs, TrainConfig(samples=5, pack_tokens=4, overflow="drop"), lr=1e-3)
