"""`rdistill data generate` / `data merge`: a tiny random-weight teacher whose chat template honours
enable_thinking answers 8 prompts in both modes; killed and resumed; sharded and merged; gates counted."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from rdistill.cli.main import app
from rdistill.flops.ledger import ModelShape, generation_flops
from teacher_support import PLAIN, read_jsonl, save_teacher, write_prompts

runner = CliRunner()
KILL_LAUNCHER = textwrap.dedent("""
    import os, signal, sys
    import rdistill.teacher as teacher
    real, calls = teacher._append_batch, []

    def append(*a, **k):
        real(*a, **k)
        calls.append(1)
        if len(calls) == int(os.environ["KILL_AFTER_BATCHES"]):
            os.kill(os.getpid(), signal.SIGKILL)

    teacher._append_batch = append
    from rdistill.cli.main import main
    sys.argv = ["rdistill", *sys.argv[1:]]
    main()
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    prompts = root / "prompts.jsonl"
    return {"teacher": save_teacher(root / "teacher"), "plain": save_teacher(root / "plain", template=PLAIN),
            "prompts": prompts, "rows": write_prompts(prompts)}


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _args(setup, out, *extra, teacher="teacher"):
    return ["data", "generate", "--teacher", setup[teacher], "--prompts", str(setup["prompts"]), "--out", str(out),
            "--batch-size", "3", "--max-new-tokens", "ift=8,reasoning=16", "--threads", "1", *extra]


def _generate(setup, out, *extra, teacher="teacher"):
    res = runner.invoke(app, _args(setup, out, *extra, teacher=teacher), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def _files(out):
    return out.with_name(out.stem + ".generations.jsonl"), out.with_name(out.stem + ".manifest.json")


def test_both_modes_for_every_prompt_with_gates_and_flops(setup, tmp_path):
    out = tmp_path / "pairs.jsonl"
    res = _generate(setup, out, "--keep", "all")
    log, manifest_path = _files(out)
    rows, manifest = read_jsonl(log), json.loads(manifest_path.read_text())
    assert sorted(r["row"] for r in rows) == list(range(1, 9))
    assert manifest["status"] == "complete" and manifest["template"]["toggle"] == "enable_thinking"
    assert manifest["template"]["example"]["ift"].endswith("<think>\n\n</think>\n\n")
    assert not manifest["template"]["example"]["reasoning"].endswith("</think>\n\n")
    net = AutoModelForCausalLM.from_pretrained(setup["teacher"])
    shape = ModelShape.from_model(net)
    for r in rows:
        for m, cap in (("ift", 8), ("reasoning", 16)):
            assert 1 <= r[f"{m}_tokens"] <= cap and isinstance(r[m], str)
            assert r[f"{m}_truncated"] == (not r[f"{m}_eos"])
            assert r[f"{m}_eos"] or r[f"{m}_tokens"] == cap
            assert r[f"{m}_flops_exact"] == generation_flops(shape, r[f"{m}_prompt_tokens"], r[f"{m}_tokens"])["exact"]
        assert r["ift_prompt_tokens"] > r["reasoning_prompt_tokens"]  # the empty think block of IFT mode
    counts, flops = manifest["counts"], manifest["flops"]
    for m in ("ift", "reasoning"):
        assert counts[m]["truncated"] == sum(r[f"{m}_truncated"] for r in rows)
        assert counts[m]["tokens"] == sum(r[f"{m}_tokens"] for r in rows)
        assert flops[m]["exact"] == sum(r[f"{m}_flops_exact"] for r in rows) > 0
        assert flops[m]["paper"] == sum(r[f"{m}_flops_paper"] for r in rows) > 0
    assert flops["total"]["exact"] == flops["ift"]["exact"] + flops["reasoning"]["exact"]
    assert 0 < counts["ift"]["truncated"] + counts["reasoning"]["truncated"] < 16  # both outcomes occur
    assert counts["reasoning_over_ift"] == pytest.approx(counts["reasoning"]["tokens"] / counts["ift"]["tokens"])
    assert manifest["environment"]["transformers"] and manifest["teacher"]["parameters"] == shape.params_total
    training = read_jsonl(out)
    assert len(training) == 8 and [t["prompt"] for t in training] == [r["prompt"] for r in setup["rows"]]
    assert "reasoning / ift" in res.output and "tokens/s" in res.output


def test_refuses_a_template_without_switch_unless_system_prompts_toggle(setup, tmp_path):
    res = runner.invoke(app, _args(setup, tmp_path / "p.jsonl", teacher="plain"))
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "no enable_thinking switch" in text and "--ift-system" in text
    assert not (tmp_path / "p.generations.jsonl").exists()
    out = tmp_path / "sys.jsonl"
    _generate(setup, out, "--ift-system", "Answer directly.", "--reasoning-system", "Think first.", teacher="plain")
    manifest = json.loads(_files(out)[1].read_text())
    assert manifest["template"]["toggle"] == "system prompts"
    assert "Think first." in manifest["template"]["example"]["reasoning"]
    assert "Think first." not in manifest["template"]["example"]["ift"]
    assert len(read_jsonl(_files(out)[0])) == 8


def test_killed_mid_way_and_resumed_loses_and_repeats_nothing(setup, tmp_path):
    reference = tmp_path / "ref.jsonl"
    _generate(setup, reference, "--keep", "all")
    out = tmp_path / "pairs.jsonl"
    launcher = tmp_path / "launch.py"
    launcher.write_text(KILL_LAUNCHER)
    env = {**os.environ, "KILL_AFTER_BATCHES": "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(launcher), *_args(setup, out, "--keep", "all")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    log, manifest = _files(out)
    assert len(read_jsonl(log)) == 6  # two whole batches of 3
    assert json.loads(manifest.read_text())["status"] == "running"
    with open(log, "a") as f:  # and a crash in the middle of writing the third batch
        f.write('{"row": 7, "prompt": "cut sh')
    res = _generate(setup, out, "--keep", "all")
    assert "resuming: 6 of 8 prompts already answered" in " ".join(res.output.split())
    rows = read_jsonl(log)
    assert sorted(r["row"] for r in rows) == list(range(1, 9))
    assert log.read_text() == _files(reference)[0].read_text()
    assert out.read_text() == reference.read_text()
    assert json.loads(manifest.read_text())["counts"] == json.loads(_files(reference)[1].read_text())["counts"]


def test_a_rerun_with_other_settings_is_refused(setup, tmp_path):
    out = tmp_path / "pairs.jsonl"
    _generate(setup, out)
    res = runner.invoke(app, _args(setup, out, "--temperature", "0.7"))
    assert res.exit_code == 2 and "other settings (ift, reasoning)" in " ".join(res.output.split())


def test_two_shards_merged_equal_one_unsharded_run(setup, tmp_path):
    whole = tmp_path / "whole.jsonl"
    _generate(setup, whole)
    shards = [tmp_path / f"shard{i}.jsonl" for i in range(2)]
    for i, s in enumerate(shards):
        _generate(setup, s, "--num-shards", "2", "--shard", str(i))
    sizes = [len(read_jsonl(_files(s)[0])) for s in shards]
    assert sizes == [5, 3]  # batches 0 and 2 (3 + 2 prompts), batch 1
    merged = tmp_path / "merged.jsonl"
    res = runner.invoke(app, ["data", "merge", *map(str, reversed(shards)), "--out", str(merged)])
    assert res.exit_code == 0, res.output
    assert merged.read_text() == whole.read_text()
    key = lambda r: r["row"]  # noqa: E731
    assert read_jsonl(_files(merged)[0]) == sorted(read_jsonl(_files(whole)[0]), key=key)
    m, w = (json.loads(_files(p)[1].read_text()) for p in (merged, whole))
    assert m["counts"] == w["counts"] and m["flops"] == w["flops"]
    assert [s["index"] for s in m["shards"]] == [1, 0] and m["shard"]["prompts"] == 8


def test_merge_refuses_missing_repeated_and_conflicting_shards(setup, tmp_path):
    shards = [tmp_path / f"s{i}.jsonl" for i in range(2)]
    for i, s in enumerate(shards):
        _generate(setup, s, "--num-shards", "2", "--shard", str(i))
    out = str(tmp_path / "m.jsonl")
    for given, message in (([shards[0]], "shards 1 of 2 are missing"), ([shards[0], shards[0]], "are both shard 0")):
        res = runner.invoke(app, ["data", "merge", *map(str, given), "--out", out])
        assert res.exit_code == 2 and message in " ".join(res.output.split())
    log0, log1 = _files(shards[0])[0], _files(shards[1])[0]
    stolen = read_jsonl(log0)[0]
    with open(log1, "a") as f:
        f.write(json.dumps({**stolen, "ift": "something else"}) + "\n")
    res = runner.invoke(app, ["data", "merge", *map(str, shards), "--out", out])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and f"prompt row {stolen['row']} is answered differently" in text
    assert f"{log1}:4" in "".join(res.output.split())  # the line of the second answer
