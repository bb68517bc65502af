"""Typed configs: every command-line option is a config field, train and sweep share their options, and a
run folder's config.json (or a YAML file) reruns the run exactly."""

import dataclasses
import json
import typing

import pytest
import typer.main
from typer.testing import CliRunner

from rdistill.cli.main import app, build_run_config
from rdistill.cli.options import SHARED_OPTIONS, SWEEP_OPTIONS, TRAIN_ONLY_OPTIONS, TRAIN_OPTIONS, overrides
from rdistill.config import RunConfig, TrainConfig, load_config
from rdistill.results import ResultsError, RunResults
from rdistill.typed import field_docs, field_type

runner = CliRunner()
CLI_ONLY = {"config", "overwrite", "help", "resume", "nproc", "list_points", "point", "index", "emit",
            "script", "gpus_per_point", "cpus_per_point", "sbatch", "max_running"}


def _flags(command: str) -> set[str]:
    click_cmd = typer.main.get_command(app).commands[command]
    return {p.name for p in click_cmd.params} - CLI_ONLY


def _example_value(tp, default):
    """A valid value of a field's type that differs from its default, as the command line would give it."""
    tp = next((a for a in typing.get_args(tp) if a is not type(None)), tp) if type(None) in typing.get_args(tp) else tp
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)[-1]
    if typing.get_origin(tp) is tuple:
        return "ift,seq25" if typing.get_args(tp)[0] is str else "1e9,2e9"
    if typing.get_origin(tp) is dict:
        return "prompt=question"
    return (not default) if tp is bool else {int: 3 if default == 2 else 7, float: 0.25, str: "x"}[tp]


def test_every_train_option_maps_to_a_documented_config_field():
    assert _flags("train") == {o.ident for o in TRAIN_OPTIONS}
    for opt in TRAIN_OPTIONS:
        cls, f = opt.field()
        assert field_docs(cls).get(f.name), f"{opt.path} has no docstring (the option's help)"


@pytest.mark.parametrize("opt", TRAIN_OPTIONS, ids=lambda o: o.flag)
def test_each_train_option_sets_its_field(opt):
    cls, f = opt.field()
    default = None if f.default is dataclasses.MISSING else f.default
    raw = _example_value(field_type(cls, f.name), default)
    given = {"budget": 1e9, opt.ident: raw}
    if opt.path == "train.samples":
        del given["budget"]  # one or the other
    elif opt.path == "train.budget_flops":
        given[opt.ident] = 5e9
    cfg = build_run_config(None, overrides(TRAIN_OPTIONS, given))
    value = cfg
    for part in opt.path.split("."):
        value = getattr(value, part)
    assert value != default, f"{opt.flag} did not reach {opt.path}"


def test_sweep_accepts_every_shared_option():
    sweep = _flags("sweep")
    assert {o.ident for o in SHARED_OPTIONS} <= sweep
    assert sweep == {o.ident for o in SWEEP_OPTIONS} | {"out"}
    train_only = {o.ident for o in TRAIN_ONLY_OPTIONS}
    assert _flags("train") - train_only <= sweep


def test_config_files_are_checked_key_by_key(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("train:\n  budget_flops: 1e9\n  lr: fast\n")
    with pytest.raises(ValueError, match="train.lr"):
        load_config(bad)
    bad.write_text("train:\n  budget_flops: 1e9\ntrian: {}\n")
    with pytest.raises(ValueError, match="trian"):
        load_config(bad)
    bad.write_text("train:\n  budget_flops: 1e9\n  budget_kind: chinchilla\n")
    with pytest.raises(ValueError, match="budget_kind"):
        load_config(bad)
    res = runner.invoke(app, ["train", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "budget_kind" in res.output and not (tmp_path / "o").exists()


def test_flags_override_a_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("arms: [ift]\ntrain:\n  budget_flops: 1e9\n  lr: 0.01\ndata:\n  train_size: 50\n")
    cfg = build_run_config(path, overrides(TRAIN_OPTIONS, {"lr": 0.5, "samples": 10}))
    assert cfg.arms == ("ift",) and cfg.data.train_size == 50
    assert cfg.train.lr == 0.5 and cfg.train.samples == 10 and cfg.train.budget_flops is None


def test_results_reader_refuses_newer_and_malformed_files(tmp_path):
    cfg = RunConfig(train=TrainConfig(budget_flops=1e9))
    from rdistill.results import DataSummary

    results = RunResults(config=cfg, data=DataSummary(source="synthetic", train=1, eval=1), environment={},
                         started="now")
    path = tmp_path / "results.json"
    results.write(path)
    assert RunResults.read(path).config == cfg
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "schema_version": data["schema_version"] + 1}))
    with pytest.raises(ResultsError, match="newer"):
        RunResults.read(path)
    path.write_text(json.dumps({**data, "status": 3}))
    with pytest.raises(ResultsError, match="status"):
        RunResults.read(path)
    with pytest.raises(ResultsError, match="missing"):
        RunResults.from_dict({"schema_version": 1})


def _numbers(results: RunResults) -> list[tuple]:
    return [(a.name, a.steps, a.samples, a.flops.exact, a.flops.executed, a.final_loss, a.eval.accuracy,
             a.eval.by_family) for a in results.arms]


def test_a_run_folders_config_reruns_it_exactly(tmp_path):
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    args = ["train", "--budget", "2e10", "--train-size", "300", "--eval-size", "8", "--max-new-tokens", "12",
            "--arms", "ift,seq50", "--lr", "0.002", "--out", str(first)]
    assert runner.invoke(app, args, catch_exceptions=False).exit_code == 0
    saved = RunConfig.from_dict(json.loads((first / "config.json").read_text()))
    assert saved.train.lr == 0.002 and saved.arms == ("ift", "seq50") and saved.train.pack_tokens == 1024
    res = runner.invoke(app, ["train", "--config", str(first / "config.json"), "--out", str(second)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    a, b = RunResults.read(first / "results.json"), RunResults.read(second / "results.json")
    assert _numbers(a) == _numbers(b)
    assert a.config == RunConfig.from_dict({**b.config.to_dict(), "out": str(first)})
    # the same from YAML, with a flag overriding the file: a different run
    (tmp_path / "run.yaml").write_text(
        "arms: [ift]\ntrain: {budget_flops: 2.0e+10, lr: 0.002}\ndata: {train_size: 300, eval_size: 8}\n"
        "eval: {max_new_tokens: 12}\n")
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "run.yaml"), "--seed", "1", "--out", str(third)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    c = RunResults.read(third / "results.json")
    assert c.config.seed == 1 and c.config.arms == ("ift",)
    assert _numbers(c)[0][3] <= 2e10 and _numbers(c)[0][5] != _numbers(a)[0][5]
