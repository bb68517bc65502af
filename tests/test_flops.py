"""The FLOP ledger against torch's FlopCounterMode, hand arithmetic, and transformers' generate.

FlopCounterMode counts matmul FLOPs (mm, addmm, bmm, ...). Two things make it comparable here:
- SDPA on CPU dispatches to a flash kernel that has no FLOP formula (it would count 0), so every
  measurement runs under the MATH backend, which decomposes attention into counted bmm calls.
- It has no formula for the in-place ``addmm_`` that the fused LM-head/CE twin uses to accumulate the
  weight gradient; without one it would miss 2 n_loss d V FLOPs. We register one (same formula as addmm).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from rdistill import model as models
from rdistill.data.batch import PackedBatch
from rdistill.flops.ledger import COMPONENTS, FlopLedger, ModelShape, StepFlops, generation_flops, train_step_flops

CONFIGS: dict[str, dict] = {
    # explicit head_dim, so h_q d_h (120) != d (96); GQA ratio 3; untied head
    "llama": dict(
        vocab_size=157, hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
        head_dim=20, intermediate_size=200, tie_word_embeddings=False,
    ),
    # head_dim derived (112 / 8 = 14); GQA ratio 4; tied head; q/k/v biases
    "qwen2": dict(
        vocab_size=123, hidden_size=112, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
        intermediate_size=136, tie_word_embeddings=True, use_sliding_window=False,
    ),
}

# (length, prompt tokens): a 1-token document, a document that is all prompt (no loss), and 40 and 45,
# which the torch attention twin currently pads into one length bucket (executed > sum of l_i^2).
DOCS = ((1, 1), (17, 6), (40, 40), (45, 12), (113, 30))


def _config(model_type: str, **overrides) -> PretrainedConfig:
    return AutoConfig.for_model(model_type, max_position_embeddings=256, **{**CONFIGS[model_type], **overrides})


def _build(model_type: str, attn_implementation: str = models.ATTN_IMPL, **overrides) -> PreTrainedModel:
    torch.manual_seed(0)
    if attn_implementation == models.ATTN_IMPL:
        return models.student_from_config(_config(model_type, **overrides))
    return AutoModelForCausalLM.from_config(_config(model_type, **overrides), attn_implementation=attn_implementation)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def net(request) -> PreTrainedModel:
    return _build(request.param)


def _documents(vocab_size: int) -> list[tuple[list[int], list[bool]]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randint(0, vocab_size, (n,), generator=g).tolist(), [t >= prompt for t in range(n)])
        for n, prompt in DOCS
    ]


def _addmm_inplace_flop(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    (m, k), (_, n) = a_shape, b_shape
    return 2 * m * n * k


def _counted(fn: Callable[[], object]) -> FlopCounterMode:
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_inplace_flop})
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter


def _train_step_measured(net: PreTrainedModel, batch: PackedBatch) -> int:
    net.zero_grad(set_to_none=True)
    return _counted(lambda: models.packed_loss_sum(net, batch, models.resolve_kernels(net, "cpu")).backward()).get_total_flops()


def _step(net: PreTrainedModel, batch: PackedBatch) -> StepFlops:
    return train_step_flops(ModelShape.from_model(net), batch.doc_lengths, batch.num_loss_tokens)


def test_packed_train_step_matches_flop_counter(net):
    batch = PackedBatch.from_documents(_documents(net.config.vocab_size))
    step = _step(net, batch)
    measured = _train_step_measured(net, batch)
    assert measured == pytest.approx(step.executed_total, rel=1e-3)
    assert measured == step.executed_total


@pytest.fixture(scope="module")
def alone(net) -> list[tuple[StepFlops, int]]:
    """Each document of DOCS as a batch of its own: (ledger step, FlopCounterMode count)."""
    batches = [PackedBatch.from_documents([doc]) for doc in _documents(net.config.vocab_size)]
    return [(_step(net, b), _train_step_measured(net, b)) for b in batches]


def test_documents_alone_add_up_to_the_packed_batch(net, alone):
    """Each document alone matches the ledger; together they differ only by the twin's bucket padding."""
    packed = PackedBatch.from_documents(_documents(net.config.vocab_size))
    packed_step = _step(net, packed)
    assert [measured for _, measured in alone] == [step.executed_total for step, _ in alone]
    assert sum(step.exact_total for step, _ in alone) == packed_step.exact_total
    padding = packed_step.executed_total - sum(step.executed_total for step, _ in alone)
    assert _train_step_measured(net, packed) - sum(measured for _, measured in alone) == padding


def test_useful_count_is_the_counter_minus_causal_halving(net, alone):
    """Alone, a document's executed attention is its full l x l square; useful is the causal triangle."""
    shape = ModelShape.from_model(net)
    unit = 3 * shape.num_layers * 4 * shape.num_heads_q * shape.head_dim
    for step, measured in alone:
        l = step.num_tokens
        assert measured - step.exact_total == unit * l * (l - 1) // 2


def test_forward_components_match_flop_counter_modules(net):
    """Per module, forward only (FlopCounterMode's module attribution is unreliable inside backward).

    The LM-head/CE twin computes its gradient matmuls during forward when its inputs need gradients,
    so its whole fwd + bwd count shows up here, outside the decoder body.
    """
    batch = PackedBatch.from_documents(_documents(net.config.vocab_size))
    shape = ModelShape.from_model(net)
    counts = _counted(lambda: models.packed_loss_sum(net, batch, models.resolve_kernels(net, "cpu"))).get_flop_counts()

    def module(suffix: str, ops: tuple[str, ...] = ("mm", "addmm")) -> int:
        (key,) = [k for k in counts if k.endswith(suffix)]
        return sum(v for op, v in counts[key].items() if str(op).rsplit(".", 1)[-1] in ops)

    layers = range(shape.num_layers)
    step = _step(net, batch)
    assert sum(module(f"layers.{i}.self_attn") for i in layers) * 3 == step.exact["projections"]
    assert sum(module(f"layers.{i}.self_attn", ("bmm",)) for i in layers) * 3 == step.executed["attention"]
    assert sum(module(f"layers.{i}.mlp") for i in layers) * 3 == step.exact["mlp"]
    body = sum(counts[type(net.model).__name__].values())
    assert sum(counts["Global"].values()) - body == step.executed["lm_head"] == step.exact["lm_head"]


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
@pytest.mark.parametrize("prompt_len,gen_len", [(13, 7), (1, 1), (6, 1), (1, 4)])
def test_generation_exact_matches_flop_counter(model_type, prompt_len, gen_len):
    """A greedy KV-cache generate: one logits row per forward, gen_len - 1 decode steps, c + 1 keys."""
    net = _build(model_type, attn_implementation="sdpa").eval()
    shape = ModelShape.from_model(net)
    ids = torch.randint(0, shape.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(2))
    out: list[torch.Tensor] = []

    def generate() -> None:
        with torch.no_grad():
            out.append(net.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=gen_len,
                min_new_tokens=gen_len, use_cache=True, pad_token_id=0,
            ))

    measured = _counted(generate).get_total_flops()
    assert out[0].shape[1] == prompt_len + gen_len
    prefill_masked_half = shape.num_layers * 4 * shape.num_heads_q * shape.head_dim * prompt_len * (prompt_len - 1) // 2
    exact = generation_flops(shape, prompt_len, gen_len)["exact"]
    assert measured - prefill_masked_half == pytest.approx(exact, rel=1e-3)
    assert measured - prefill_masked_half == exact


def _hand_shape() -> ModelShape:
    return ModelShape(
        vocab_size=10, hidden_size=4, num_layers=2, num_heads_q=2, num_heads_kv=1, head_dim=2,
        intermediate_size=8, gated_mlp=True, params_total=1000, params_non_embedding=960,
    )


def test_paper_training_formula_by_hand():
    """V=10, d=4, h=2, d_ff=8, N_l=2; documents of 3 and 5 tokens."""
    step = train_step_flops(_hand_shape(), [3, 5], num_loss_tokens=4)
    # forward(3): embedding 2*3*10*4 = 240; per layer QKV 6*3*16 = 288, QK 2*9*4 = 72, softmax 3*9*2 = 54,
    #   AV 72, out 2*3*16 = 96; MLP 2 * 4*3*4*8 = 768; logits 240.            Total 2412.
    # forward(5): embedding 400; per layer QKV 480, QK 200, softmax 150, AV 200, out 160; MLP 1280;
    #   logits 400.                                                           Total 4460.
    assert step.paper == {
        "embedding": 3 * (240 + 400),
        "projections": 3 * 2 * (288 + 96 + 480 + 160),
        "attention": 3 * 2 * (72 + 54 + 72 + 200 + 150 + 200),
        "mlp": 3 * (768 + 1280),
        "lm_head": 3 * (240 + 400),
    }
    assert step.paper_total == 3 * (2412 + 4460) == 20616


def test_exact_training_formula_by_hand():
    """Same shape (h_kv=1, d_h=2, gated); T = 8 tokens, 4 of them labelled."""
    step = train_step_flops(_hand_shape(), [3, 5], num_loss_tokens=4)
    # per layer and token: projections 2*4*(2+2)*2 + 2*2*2*4 = 96, MLP 2*4*8*3 = 192
    # attention per layer: 4*2*2 * (3*4/2 + 5*6/2) = 16 * 21; LM head 2*4*4*10 = 320
    assert step.exact == {
        "embedding": 0,
        "projections": 3 * 2 * 96 * 8,
        "attention": 3 * 2 * 16 * 21,
        "mlp": 3 * 2 * 192 * 8,
        "lm_head": 3 * 320,
    }
    assert step.executed["attention"] == 3 * 2 * 16 * (9 + 25)
    assert step.six_nd == 6 * 1000 * 8 and step.six_nd_non_embedding == 6 * 960 * 8


def test_generation_formulas_by_hand():
    """Same shape; prompt 3, generate 2."""
    flops = generation_flops(_hand_shape(), prompt_len=3, gen_len=2)
    # paper: prefill = forward(3) - 240 + 2*4*10 = 2252; decode(c) = 80 + 2*(96 + 8c + 6c + 8c + 32) + 256 + 80
    #   = 672 + 44 c; decode(4) + decode(5) = 848 + 892
    assert flops["paper"] == 2252 + 848 + 892
    # exact: prefill 2*(96*3 + 192*3 + 16*6) + 80 = 2000; one decode step feeding position 3 (4 keys):
    #   2*(96 + 192 + 16*4) + 80 = 784
    assert flops["exact"] == 2000 + 784
    with pytest.raises(ValueError, match="gen_len"):
        generation_flops(_hand_shape(), prompt_len=3, gen_len=0)


def test_six_nd_counts_unique_parameters(net):
    batch = PackedBatch.from_documents(_documents(net.config.vocab_size))
    params = models.count_parameters(net)
    step = _step(net, batch)
    assert step.six_nd == 6 * params["total"] * batch.num_tokens
    assert step.six_nd_non_embedding == 6 * params["non_embedding"] * batch.num_tokens
    assert step.total("six_nd") == step.six_nd


@pytest.mark.parametrize(
    "model_type,overrides",
    [
        ("qwen2", {}),
        ("qwen2", {"tie_word_embeddings": False}),
        ("llama", {}),
        ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}),
        ("mistral", {}),
        ("qwen3", {"attention_bias": True}),
    ],
)
def test_from_config_agrees_with_from_model(model_type, overrides):
    base = CONFIGS["llama"] if model_type in ("mistral", "qwen3") else CONFIGS[model_type]
    config = AutoConfig.for_model(model_type, max_position_embeddings=256, **{**base, **overrides})
    torch.manual_seed(0)
    built = ModelShape.from_model(AutoModelForCausalLM.from_config(config))
    assert ModelShape.from_config(config) == built
    assert built.gated_mlp
    assert built.head_dim == (base.get("head_dim") or base["hidden_size"] // base["num_attention_heads"])


def test_from_config_rejects_unknown_model_types():
    with pytest.raises(ValueError, match="from_model"):
        ModelShape.from_config(AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2))


def test_ledger_accumulates_and_round_trips():
    shape = _hand_shape()
    a = train_step_flops(shape, [3, 5], num_loss_tokens=4)
    b = train_step_flops(shape, [7], num_loss_tokens=6)
    ledger = FlopLedger()
    ledger.add(a)
    ledger.add(b)
    for kind in ("exact", "executed", "paper", "six_nd", "six_nd_non_embedding"):
        assert ledger.total(kind) == a.total(kind) + b.total(kind)
        assert isinstance(ledger.total(kind), int)
    assert ledger.components("paper") == {c: a.paper[c] + b.paper[c] for c in COMPONENTS}
    assert (ledger.steps, ledger.tokens, ledger.loss_tokens) == (2, 15, 10)

    snapshot = json.loads(json.dumps(ledger.to_dict()))
    assert snapshot == ledger.to_dict()
    restored = FlopLedger.from_dict(snapshot)
    assert restored.to_dict() == ledger.to_dict()

    restored.merge(ledger)
    assert restored.total("exact") == 2 * ledger.total("exact")
    assert restored.components("executed")["attention"] == 2 * ledger.components("executed")["attention"]
    with pytest.raises(ValueError, match="unknown FLOP kind"):
        ledger.total("tokens")
