import numpy as np
import pytest
import torch

from rdistill.model import build_student
from rdistill.synthetic.teacher import make_splits
from rdistill.data.tokenize import encode_document
from rdistill.config import TrainConfig
from rdistill.schedule import make_schedule
from rdistill.train import NonFiniteLoss, Trainer, train_arm


@pytest.fixture(scope="module")
def docs(tok):
    train, _ = make_splits(300, 4, seed=3)
    return [tuple(np.asarray(x) for x in encode_document(tok, e.prompt, e.reasoning)) for e in train]


def _tiny(tok):
    from rdistill.model import PRESETS, StudentPreset

    PRESETS.setdefault("test-micro", StudentPreset(32, 2, 2, 1, 64, "test only"))
    return build_student("test-micro", len(tok), seed=0)


def test_wsd_schedule_on_steps():
    s = make_schedule(100, (1.0,), warmup_frac=0.1, decay_frac=0.2, final_frac=0.1)
    assert (s.warmup, s.decay) == (10, 20)
    assert s.lr(1) == pytest.approx(0.1) and s.lr(5) == pytest.approx(0.5) and s.lr(10) == 1.0  # ends its warmup at the peak
    assert s.lr(50) == 1.0 and s.lr(80) == 1.0
    assert s.lr(90) == pytest.approx(0.55) and s.lr(100) == pytest.approx(0.1)
    # the paper's step counts, capped so that at least half the steps train at the peak
    s = make_schedule(19, (1.0,), warmup_frac=0, decay_frac=0, final_frac=0.1, warmup_steps=150, decay_steps=300)
    assert (s.warmup, s.decay) == (9, 9)


def test_a_sequential_schedule_gives_each_phase_its_peak_and_keeps_warmup_out_of_most_of_it():
    # a seq50 under a budget: the IFT phase is 6 of 100 steps; a 10-step warmup would eat all of it
    s = make_schedule(100, (1e-3, 4e-3), (1, 7), warmup_frac=0.1, decay_frac=0.3, final_frac=0.1)
    assert (s.warmup, s.decay) == (3, 30)
    assert [s.lr(t) for t in range(1, 7)] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3, 1e-3])
    assert s.lr(7) == 4e-3 and s.lr(70) == 4e-3 and s.lr(100) == pytest.approx(4e-4)


def _trainer(tok, docs, cfg, **kw):
    from rdistill.model import resolve_kernels

    net = _tiny(tok)
    return Trainer(net, docs, cfg, lr=1e-3, seed=0, kernels=resolve_kernels(net, "cpu"), **kw)


@pytest.mark.parametrize("cfg", [
    TrainConfig(budget_flops=3e9, pack_tokens=512),
    TrainConfig(budget_flops=3e9, pack_tokens=512, batch_samples=16),
    TrainConfig(samples=150, pack_tokens=512),
    TrainConfig(samples=150, pack_tokens=512, batch_samples=0, packs_per_step=2),
])
def test_the_dry_run_counts_the_steps_training_takes(tok, docs, cfg):
    t = _trainer(tok, docs, cfg)
    planned, _ = t.count_steps()
    out = t.train()
    assert out.steps == planned == out.schedule.total


def test_paper_mode_steps_are_32_samples_whatever_their_tokens(tok, docs):
    """The paper's global batch: IFT (short) and reasoning (long) documents make the same optimizer steps
    for the same samples, each step packed into as many rows as it needs."""
    ift = [(ids[:12], mask[:12]) for ids, mask in docs]  # short documents: many to a pack
    counts = []
    for d in (ift, docs):
        seen = []
        out = train_arm(_tiny(tok), d, TrainConfig(samples=200, pack_tokens=512), lr=1e-3,
                        on_step=lambda rec, led: seen.append(rec.samples))
        counts.append((out.steps, seen))
    assert counts[0] == counts[1] and counts[0][0] == 7 and counts[0][1] == [32] * 6 + [8]


@pytest.mark.parametrize("kind", ["exact", "paper", "6nd"])
def test_budget_is_met_within_one_percent_never_above(tok, docs, kind):
    net = _tiny(tok)
    budget = 4e9
    s = TrainConfig(budget_flops=budget, budget_kind=kind, pack_tokens=512)
    out = train_arm(net, docs, s, lr=1e-3)
    spent = out.ledger.total(s.ledger_kind)
    assert spent <= budget
    assert spent >= 0.99 * budget
    assert out.stopped_by == "budget"


def test_steps_report_mfu_and_hfu(tok, docs):
    net = _tiny(tok)
    recs = []
    out = train_arm(net, docs, TrainConfig(budget_flops=2e9, pack_tokens=512), lr=1e-3, on_step=lambda r, l: recs.append(r))
    assert all(r.mfu > 0 and r.hfu >= r.mfu for r in recs)
    assert out.mfu > 0 and out.hfu >= out.mfu and out.peak_flops > 0


def test_samples_mode_sees_each_sample_once(tok, docs):
    net = _tiny(tok)
    seen = []
    s = TrainConfig(samples=120, pack_tokens=512)
    out = train_arm(net, docs, s, lr=1e-3, on_step=lambda rec, led: seen.append(rec.samples))
    assert out.samples == 120 == sum(seen)
    assert out.stopped_by == "samples"


def test_same_seed_same_run(tok, docs):
    runs = []
    for _ in range(2):
        net = _tiny(tok)
        recs = []
        train_arm(net, docs, TrainConfig(budget_flops=2e9, pack_tokens=512), lr=1e-3, on_step=lambda r, l: recs.append(r.loss))
        runs.append((recs, [p.detach().clone() for p in net.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_non_finite_loss_names_the_step(tok, docs):
    net = _tiny(tok)
    steps = []

    def poison(rec, ledger):
        steps.append(rec.step)
        if rec.step == 2:
            with torch.no_grad():
                net.get_input_embeddings().weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLoss, match="at step 3"):
        train_arm(net, docs, TrainConfig(budget_flops=1e11, pack_tokens=512), lr=1e-3, on_step=poison)


def test_loss_is_normalised_by_the_step_not_the_pack(tok, docs):
    """The same documents in one pack or spread over many accumulated packs: same loss, same gradient."""
    losses = []
    for pack_tokens, per_step in ((4096, 1), (256, 64)):
        net = _tiny(tok)
        s = TrainConfig(samples=40, pack_tokens=pack_tokens, packs_per_step=per_step, batch_samples=0)
        out = train_arm(net, docs, s, lr=1e-3, on_step=lambda r, l: losses.append(r.loss))
        assert out.steps == 1
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)

    from rdistill.data.batch import PackedBatch
    from rdistill.model import packed_loss_sum, resolve_kernels

    net = _tiny(tok)
    kernels = resolve_kernels(net, "cpu")
    sample = docs[:40]
    total = sum(int(m[1:].sum()) for _, m in sample)
    grads = []
    for chunks in ([sample], [sample[i : i + 7] for i in range(0, 40, 7)]):
        net.zero_grad()
        for chunk in chunks:
            (packed_loss_sum(net, PackedBatch.from_documents(chunk), kernels) / total).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_settings_validation():
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig()
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig(budget_flops=1e9, samples=3)
    with pytest.raises(ValueError, match="budget_kind"):
        TrainConfig(budget_flops=1e9, budget_kind="chinchilla")


def test_the_ledger_counts_the_kernels_that_run(tok, docs, monkeypatch):
    """The Trainer passes its KernelPlan to the kernels and to the ledger: force each implementation
    and check that the kernels were called with it and that the executed count follows it."""
    import rdistill.model as model_mod
    from rdistill.flops.ledger import ModelShape, train_step_flops
    from rdistill.model import KernelPlan

    calls = {"attention": set(), "loss": set()}
    real_attention, real_loss = model_mod.varlen_attention, model_mod.fused_linear_cross_entropy

    def attention(*args, impl, **kw):
        calls["attention"].add(impl)
        return real_attention(*args, impl=impl, **kw)

    def loss(*args, impl, **kw):
        calls["loss"].add(impl)
        return real_loss(*args, impl=impl, **kw)

    monkeypatch.setattr(model_mod, "varlen_attention", attention)
    monkeypatch.setattr(model_mod, "fused_linear_cross_entropy", loss)
    executed = {}
    for attn_impl in ("torch", "triton"):  # "triton" runs in the interpreter (conftest sets TRITON_INTERPRET=1)
        calls = {"attention": set(), "loss": set()}
        net = _tiny(tok)
        plan = KernelPlan(attention=attn_impl, loss="torch", dtype=torch.float32)
        recs = []
        out = train_arm(net, docs[:6], TrainConfig(samples=6, pack_tokens=512), lr=1e-3, kernels=plan,
                        on_step=lambda r, l: recs.append(r))
        assert calls == {"attention": {attn_impl}, "loss": {"torch"}}
        shape = ModelShape.from_model(net)
        lengths = [len(d[0]) for d in docs[:6]]
        loss_tokens = sum(int(d[1][1:].sum()) for d in docs[:6])
        want = train_step_flops(shape, lengths, loss_tokens, attn_impl=attn_impl, ce_impl="torch", attn_dtype=torch.float32)
        assert out.ledger.total("executed") == want.total("executed")
        assert out.ledger.total("exact") == want.total("exact")
        executed[attn_impl] = out.ledger.total("executed")
    assert executed["torch"] != executed["triton"]  # the two kernels execute different tiles
