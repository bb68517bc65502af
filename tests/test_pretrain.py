"""--pretrain: a preset student trained on a copying corpus once, cached, and the start of every arm."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rdistill import distributed
from rdistill.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from rdistill.data.tokenize import encode_document
from rdistill.pretrain import copy_corpus, pretrain_key
from rdistill.hooks import QuietHooks
from rdistill.run import _ArmRunner, prepare, run
from rdistill.synthetic import builtin_tokenizer


def _cfg(out, pretrain: float, **model) -> RunConfig:
    return RunConfig(train=TrainConfig(budget_flops=3e10, save_every=0), out=str(out), arms=("ift",), threads=1,
                     log_every=0, data=DataConfig(train_size=200, eval_size=4), eval=EvalConfig(enabled=False),
                     model=ModelConfig(pretrain=pretrain, **model))


def test_copy_corpus_is_deterministic_and_known_to_the_tokenizer():
    tok = builtin_tokenizer()
    rows = copy_corpus(tok, 300)
    assert rows == copy_corpus(tok, 300) and rows != copy_corpus(tok, 300, seed=1)
    for r in rows:
        assert r.prompt == "Write: " + r.ift and r.ift == r.reasoning and 2 <= len(r.ift.split()) <= 12
        ids, _ = encode_document(tok, r.prompt, r.ift)
        assert tok.unk_token_id not in list(ids), r
    # no task of the built-in families leaks in: no row asks anything but to write its words again
    assert not any(w in r.ift.split() for r in rows for w in ("Reverse", "Sort", "Remove", "Which", "boxed"))


def test_the_key_follows_what_makes_the_student():
    tok = builtin_tokenizer()
    key = pretrain_key(_cfg("x", 1e11), tok)
    assert key == pretrain_key(_cfg("elsewhere", 1e11), tok)
    assert key != pretrain_key(_cfg("x", 2e11), tok)
    assert key != pretrain_key(_cfg("x", 1e11, name="small"), tok)


def test_arms_start_from_the_cached_pretrained_student(tmp_path, monkeypatch):
    monkeypatch.setenv("RDISTILL_CACHE", str(tmp_path / "cache"))
    said = []
    prep = prepare(_cfg(tmp_path / "a", 2e11))
    run(prep, _Messages(said))
    record = json.loads((tmp_path / "a" / "pretrained.json").read_text())
    folder = tmp_path / "cache" / "pretrained" / record["key"]
    assert any("pretraining the tiny student" in s for s in said)
    assert abs(record["flops"] - 2e11) <= 0.05 * 2e11 and record["flops"] <= 2e11
    # copying was learnt from the start: far below a uniform guess over the vocabulary
    assert record["final_loss"] < math.log(len(prep.tok)) - 1.0, record
    assert not list((tmp_path / "cache" / "pretrained").glob("*.building-*"))

    # a second run reuses it (no second pretraining) and its arm starts from those weights
    said.clear()
    run(_cfg(tmp_path / "b", 2e11), _Messages(said))
    assert not any("pretraining the" in s for s in said)
    assert json.loads((tmp_path / "b" / "pretrained.json").read_text()) == record
    cached = load_file(folder / "model.safetensors")
    run(_cfg(tmp_path / "c", 0.0))
    # the same seed and data, another start (2e11 FLOPs of copying: 6.79 against 5.98 from scratch, measured)
    first, first_scratch = _first_loss(tmp_path / "b"), _first_loss(tmp_path / "c")
    assert abs(first - first_scratch) > 0.1, (first, first_scratch)
    # exactly: the student an arm is built from holds the cached weights
    net = _ArmRunner(prepare(_cfg(tmp_path / "d", 2e11)), None, tmp_path / "d", None, distributed.world("none", "cpu"),
                     student=folder)._student()
    state = net.state_dict()
    assert any(name.endswith("embed_tokens.weight") for name in cached)
    assert all(torch.equal(state[name], tensor) for name, tensor in cached.items())


def test_pretrain_refuses_a_checkpoint_and_negative_flops(tmp_path, monkeypatch):
    monkeypatch.setenv("RDISTILL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="--pretrain must be 0 or a positive"):
        ModelConfig(pretrain=-1.0)
    run(_cfg(tmp_path / "a", 0.0))
    with pytest.raises(ValueError, match="is a checkpoint, already pretrained"):
        prepare(_cfg(tmp_path / "b", 1e11, name=str(tmp_path / "a" / "ift" / "model")))


class _Messages(QuietHooks):
    """A run's hooks that keep its messages (the others stay quiet)."""

    def __init__(self, said: list[str]) -> None:
        self.said = said

    def message(self, text: str) -> None:
        self.said.append(text)


def _first_loss(run_dir) -> float:
    return json.loads((run_dir / "ift" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
