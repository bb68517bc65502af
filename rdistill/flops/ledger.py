"""The FLOP ledger: exact, executed, paper-formula and 6ND counts of training and generation.

Everything here is exact integer arithmetic on Python ints computed from host-side shapes (the model's
config and a PackedBatch's ``doc_lengths`` / ``num_loss_tokens``): no tensors, no device syncs.

Symbols: V vocabulary, d width (``hidden_size``), N_l layers, h_q query heads, h_kv key/value heads,
d_h head dim, d_ff MLP width (``intermediate_size``), documents of lengths l_1..l_n packed into
T = sum_i l_i tokens, n_loss the positions that carry a label.

Exact (useful) training FLOPs of one packed batch, forward + backward, per component:

    embedding    0                                                   (a lookup, not a matmul)
    projections  3 N_l [2 T d (h_q + 2 h_kv) d_h + 2 T h_q d_h d]    (Q, K, V and output projections)
    attention    3 N_l 4 h_q d_h sum_i l_i (l_i + 1) / 2              (causal QK^T and PV, per document)
    mlp          3 N_l 2 T d d_ff (3 if gated else 2)                 (SwiGLU has three matrices)
    lm_head      3 2 n_loss d V                                       (only labelled rows are multiplied)

The factor 3 is forward + backward, backward = 2x forward: every matmul needs the gradient of its input
and of its weight (or, for attention, of both operands). The first layer's input gradient is counted
too, because the embedding it flows into is trainable. The attention and LM-head terms come from the
kernels' own formulas, ``varlen_attention_flops`` and ``linear_ce_flops`` ("useful" fields).

Executed training FLOPs: what the chosen implementation really runs. Projections and MLP as above; the
attention and LM-head terms are the kernels' "executed" fields (the torch attention twin computes the
full l_i x l_i square of every document and masks it: 3 N_l 4 h_q d_h sum_i l_i^2; the torch LM-head
twin executes exactly its useful count unless reduction="none", which recomputes the logits).
Recomputation (activation checkpointing, attention backward) belongs here, never in "exact": with
``--recompute full`` every layer's forward (projections, attention, MLP) runs twice, with
``selective`` every layer's MLP; torch's checkpoint stops the second forward as soon as everything
backward needs is back, so the MLP's output matmul (its input is what backward keeps) runs once.

Deliberately not counted in exact or executed: RMSNorm, rotary embeddings, softmax and its scaling,
residual adds, SwiGLU's elementwise product, bias adds (bias parameters are counted in parameter totals
but cost no matmul FLOPs), the cross-entropy itself, the optimizer step and gradient all-reduce.
Sliding-window attention is not modelled: counts assume full causal attention within each document.

Paper formula (PAPER.md, "How they count compute"), per document of length l, with h = h_q:

    forward(l) = 2 l V d                                               embedding (counted as a matmul)
               + N_l (6 l d^2 + 2 l d^2)                               projections: QKV, output
               + N_l (2 l^2 d + 3 l^2 h + 2 l^2 d)                     attention: QK^T, softmax, AV
               + N_l 4 l d d_ff                                        MLP, two matrices
               + 2 l d V                                               logits, at every position
    train_step = sum_i 3 forward(l_i)

It knows no grouped-query attention, no gated MLP, no causal halving and no loss mask; packing enters
only because it is applied per document (sum of l_i^2, never T^2).

6ND: 6 N T with N = all unique parameters (tied embeddings once), and 6 N' T with N' = N minus the
input embedding matrix; T counts every token of the batch, labelled or not.

Generation (greedy, KV cache, transformers ``generate``), for a prompt of l_p tokens and l_g >= 1
generated tokens: see ``generation_flops``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rdistill.kernels import linear_ce_flops, varlen_attention_flops
from rdistill.model import RECOMPUTE, count_parameters

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

COMPONENTS: tuple[str, ...] = ("embedding", "projections", "attention", "mlp", "lm_head")
COMPONENT_KINDS: tuple[str, ...] = ("exact", "executed", "paper")
KINDS: tuple[str, ...] = (*COMPONENT_KINDS, "six_nd", "six_nd_non_embedding")

GATED_MLP_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"})
_GATE_MODULE_NAMES = frozenset({"gate_proj", "gate_up_proj"})
_FROM_CONFIG_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class ModelShape:
    """The shape numbers of a dense decoder that the FLOP formulas need, and its parameter counts.

    ``params_non_embedding`` is ``params_total`` minus the input embedding matrix (V d); an untied LM
    head stays in it.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads_q: int
    num_heads_kv: int
    head_dim: int
    intermediate_size: int
    gated_mlp: bool
    params_total: int
    params_non_embedding: int

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads_q", "num_heads_kv", "head_dim",
                     "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelShape.{name} must be a positive int, got {value!r}")
        if self.num_heads_q % self.num_heads_kv:
            raise ValueError(
                f"num_heads_q={self.num_heads_q} must be a multiple of num_heads_kv={self.num_heads_kv}"
            )
        if not 0 <= self.params_non_embedding <= self.params_total:
            raise ValueError(
                f"need 0 <= params_non_embedding ({self.params_non_embedding}) <= params_total ({self.params_total})"
            )

    @classmethod
    def from_model(cls, net: PreTrainedModel) -> ModelShape:
        """Shape of a built transformers model (Qwen2/Llama-like), parameters counted from its tensors.

        Unique parameters are counted, so tied input/output embeddings count once. The MLP is gated when
        the model has a ``gate_proj`` / ``gate_up_proj`` module or its ``model_type`` is a known gated one.
        """
        config = _text_config(net.config)
        params = count_parameters(net)
        has_gate = any(name.rsplit(".", 1)[-1] in _GATE_MODULE_NAMES for name, _ in net.named_modules())
        return cls(
            **_config_dims(config),
            gated_mlp=has_gate or config.model_type in GATED_MLP_MODEL_TYPES,
            params_total=params["total"],
            params_non_embedding=params["non_embedding"],
        )

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> ModelShape:
        """Shape of a model that need not be built: parameters by formula from a transformers config.

        Supported ``model_type``: llama, mistral, qwen2, qwen3 (all with a gated MLP). Per layer:
        Q/K/V/O weights d (h_q + 2 h_kv) d_h + h_q d_h d; biases on Q, K, V for qwen2, on Q, K, V, O
        when ``attention_bias`` (llama, qwen3); MLP 3 d d_ff, plus 2 d_ff + d biases when ``mlp_bias``
        (llama); two RMSNorm weights of d; qwen3's q_norm and k_norm of d_h each. Then the final norm d,
        the input embedding V d and, unless ``tie_word_embeddings``, an LM head V d.
        """
        config = _text_config(config)
        model_type = config.model_type
        if model_type not in _FROM_CONFIG_MODEL_TYPES:
            raise ValueError(
                f"ModelShape.from_config knows {', '.join(_FROM_CONFIG_MODEL_TYPES)}, not {model_type!r}; "
                "build the model and use ModelShape.from_model(net) instead"
            )
        dims = _config_dims(config)
        d, d_ff, d_h = dims["hidden_size"], dims["intermediate_size"], dims["head_dim"]
        q_out, kv_out = dims["num_heads_q"] * d_h, dims["num_heads_kv"] * d_h
        attention_bias = bool(getattr(config, "attention_bias", False))
        layer = d * (q_out + 2 * kv_out) + q_out * d + 3 * d * d_ff + 2 * d
        if model_type == "qwen2":
            layer += q_out + 2 * kv_out
        elif attention_bias:
            layer += q_out + 2 * kv_out + d
        if getattr(config, "mlp_bias", False):
            layer += 2 * d_ff + d
        if model_type == "qwen3":
            layer += 2 * d_h
        embedding = dims["vocab_size"] * d
        head = 0 if getattr(config, "tie_word_embeddings", False) else embedding
        non_embedding = dims["num_layers"] * layer + d + head
        return cls(
            **dims,
            gated_mlp=True,
            params_total=embedding + non_embedding,
            params_non_embedding=non_embedding,
        )


def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _config_dims(config: Any) -> dict[str, int]:
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if getattr(config, k, None) is None]
    if missing:
        raise ValueError(
            f"config of model_type {getattr(config, 'model_type', '?')!r} lacks {', '.join(missing)}; "
            "the FLOP ledger handles Llama/Qwen2-style decoders only"
        )
    heads = config.num_attention_heads
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads_q": heads,
        "num_heads_kv": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "intermediate_size": config.intermediate_size,
    }


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step on one packed batch (forward + backward).

    ``exact``, ``executed`` and ``paper`` map every name in ``COMPONENTS`` to an int (treat as
    read-only); ``six_nd`` and ``six_nd_non_embedding`` are totals only.
    """

    exact: Mapping[str, int]
    executed: Mapping[str, int]
    paper: Mapping[str, int]
    six_nd: int
    six_nd_non_embedding: int
    num_tokens: int
    num_loss_tokens: int
    num_docs: int

    @property
    def exact_total(self) -> int:
        return sum(self.exact.values())

    @property
    def executed_total(self) -> int:
        return sum(self.executed.values())

    @property
    def paper_total(self) -> int:
        return sum(self.paper.values())

    def total(self, kind: str) -> int:
        """Total FLOPs of one kind (one of ``KINDS``)."""
        _check_kind(kind, KINDS)
        if kind in COMPONENT_KINDS:
            return sum(getattr(self, kind).values())
        return getattr(self, kind)


def _check_kind(kind: str, kinds: tuple[str, ...]) -> None:
    if kind not in kinds:
        raise ValueError(f"unknown FLOP kind {kind!r}; choose one of {', '.join(kinds)}")


def _dense_forward(shape: ModelShape, tokens: int) -> tuple[int, int]:
    """Forward FLOPs of all layers' projections and MLPs for ``tokens`` tokens."""
    s = shape
    projections = 2 * tokens * s.hidden_size * (s.num_heads_q + 2 * s.num_heads_kv) * s.head_dim
    projections += 2 * tokens * s.num_heads_q * s.head_dim * s.hidden_size
    mlp = 2 * tokens * s.hidden_size * s.intermediate_size * (3 if s.gated_mlp else 2)
    return s.num_layers * projections, s.num_layers * mlp


def _paper_forward(shape: ModelShape, length: int, logit_positions: int) -> dict[str, int]:
    """PAPER.md's forward(l) per component, with the logits term taken at ``logit_positions`` positions."""
    V, d, h, d_ff, n_l, l = (shape.vocab_size, shape.hidden_size, shape.num_heads_q, shape.intermediate_size,
                             shape.num_layers, length)
    return {
        "embedding": 2 * l * V * d,
        "projections": n_l * (6 * l * d * d + 2 * l * d * d),
        "attention": n_l * (2 * l * l * d + 3 * l * l * h + 2 * l * l * d),
        "mlp": n_l * 4 * l * d * d_ff,
        "lm_head": 2 * logit_positions * d * V,
    }


def train_step_flops(
    shape: ModelShape,
    doc_lengths: Sequence[int],
    num_loss_tokens: int,
    *,
    attn_impl: str = "torch",
    ce_impl: str = "torch",
    ce_reduction: str = "sum",
    attn_dtype: Any = None,
    recompute: str = "none",
) -> StepFlops:
    """FLOPs of one forward + backward on a packed batch (see the module docstring for every formula).

    ``doc_lengths`` and ``num_loss_tokens`` are a PackedBatch's host fields; ``attn_impl``, ``ce_impl``
    and ``ce_reduction`` are what the step passes to ``varlen_attention`` and
    ``fused_linear_cross_entropy`` (``packed_loss_sum`` uses reduction="sum"), resolved (not "auto").
    ``attn_dtype`` is the activations' dtype, which sets the Triton attention's tile sizes and so its
    executed count; the useful counts depend on neither. ``recompute`` is the activation checkpointing
    in force (rdistill.model.apply_recompute): "full" runs every layer's forward (projections, attention,
    MLP but its output matmul) a second time in backward, "selective" every layer's MLP (but its output
    matmul); that second forward is added to the executed count of its component, never to exact.
    """
    if recompute not in RECOMPUTE:
        raise ValueError(f"unknown recompute mode {recompute!r}; choose one of {', '.join(RECOMPUTE)}")
    lengths = [int(l) for l in doc_lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"doc_lengths must be one or more positive lengths, got {list(doc_lengths)}")
    tokens = sum(lengths)
    if not 0 <= num_loss_tokens <= tokens:
        raise ValueError(f"num_loss_tokens={num_loss_tokens} must lie in [0, {tokens}] (the batch's tokens)")
    s = shape
    projections, mlp = _dense_forward(s, tokens)
    attn_kw = {"dtype": attn_dtype} if attn_dtype is not None else {}
    attn = varlen_attention_flops(lengths, s.num_heads_q, s.head_dim, causal=True, impl=attn_impl, **attn_kw)
    head = linear_ce_flops(num_loss_tokens, s.hidden_size, s.vocab_size, reduction=ce_reduction, impl=ce_impl)

    def counted(kind: str) -> dict[str, int]:
        again = {"projections": 0, "attention": 0, "mlp": 0}
        if kind == "executed" and recompute != "none":
            # torch's checkpoint stops recomputing once every tensor backward needs is back: the MLP's
            # output matmul (down) saves only its input, so it never runs again
            again["mlp"] = mlp * (2 if s.gated_mlp else 1) // (3 if s.gated_mlp else 2)
            if recompute == "full":
                again["projections"], again["attention"] = projections, s.num_layers * attn["executed_fwd"]
        return {
            "embedding": 0,
            "projections": 3 * projections + again["projections"],
            "attention": s.num_layers * (attn[f"{kind}_fwd"] + attn[f"{kind}_bwd"]) + again["attention"],
            "mlp": 3 * mlp + again["mlp"],
            "lm_head": head[f"{kind}_fwd"] + head[f"{kind}_bwd"],
        }

    paper = dict.fromkeys(COMPONENTS, 0)
    for l in lengths:
        for name, value in _paper_forward(s, l, logit_positions=l).items():
            paper[name] += 3 * value
    return StepFlops(
        exact=counted("useful"),
        executed=counted("executed"),
        paper=paper,
        six_nd=6 * s.params_total * tokens,
        six_nd_non_embedding=6 * s.params_non_embedding * tokens,
        num_tokens=tokens,
        num_loss_tokens=num_loss_tokens,
        num_docs=len(lengths),
    )


def generation_flops(shape: ModelShape, prompt_len: int, gen_len: int) -> dict[str, int]:
    """Forward FLOPs of greedily generating ``gen_len`` tokens after a ``prompt_len``-token prompt.

    Returns ``{"exact": ..., "paper": ...}``; both need prompt_len >= 1 and gen_len >= 1 (with no token
    to generate there is nothing to prefill for).

    exact: what transformers' ``generate`` with a KV cache runs (checked against FlopCounterMode):
      prefill   N_l [proj(l_p) + mlp(l_p) + 4 h_q d_h l_p (l_p + 1) / 2] + 2 d V
                (causal attention, the useful triangle; ``generate`` asks for the logits of the last
                position only, via ``logits_to_keep=1``)
      decode    gen_len - 1 steps: the last generated token is never fed back. The step that feeds the
                token at absolute position c (0-based, c = l_p .. l_p + l_g - 2) attends c + 1 keys:
                N_l [proj(1) + mlp(1) + 4 h_q d_h (c + 1)] + 2 d V
      with proj(n) = 2 n d (h_q + 2 h_kv) d_h + 2 n h_q d_h d and mlp(n) = 2 n d d_ff (3 if gated else 2)
      per layer. A dense SDPA prefill executes the full l_p^2 square instead of the triangle: that is
      4 h_q d_h N_l l_p (l_p - 1) / 2 more executed, not useful, FLOPs. Same exclusions as training.

    paper: PAPER.md as written, prefill(l_p) + sum_{i=1..l_g} decode(l_p + i), where prefill is
      forward(l_p) with the logits at one position (2 d V) and
      decode(c) = 2 d V + N_l (6 d^2 + 2 c d + 3 c h + 2 c d + 2 d^2) + N_l 4 d d_ff + 2 d V.
      It decodes l_g steps (one more than the cache ever needs) with context l_p + i.
    """
    if prompt_len < 1 or gen_len < 1:
        raise ValueError(f"need prompt_len >= 1 and gen_len >= 1, got prompt_len={prompt_len}, gen_len={gen_len}")
    s = shape
    d, V, n_l, h = s.hidden_size, s.vocab_size, s.num_layers, s.num_heads_q
    head = 2 * d * V
    attn_unit = 4 * s.num_heads_q * s.head_dim * n_l

    proj, mlp = _dense_forward(s, prompt_len)
    exact = proj + mlp + attn_unit * prompt_len * (prompt_len + 1) // 2 + head
    steps = gen_len - 1
    keys = steps * (2 * prompt_len + gen_len) // 2
    proj, mlp = _dense_forward(s, 1)
    exact += steps * (proj + mlp + head) + attn_unit * keys

    paper = sum(_paper_forward(s, prompt_len, logit_positions=1).values())
    contexts = gen_len * prompt_len + gen_len * (gen_len + 1) // 2
    paper += gen_len * (2 * d * V + n_l * (6 * d * d + 2 * d * d) + n_l * 4 * d * s.intermediate_size + 2 * d * V)
    paper += n_l * (2 * d + 3 * h + 2 * d) * contexts
    return {"exact": exact, "paper": paper}


class FlopLedger:
    """Cumulative FLOPs of a run: per kind (``KINDS``) and, for exact/executed/paper, per component.

    Python ints only, so ``add`` costs a few dozen integer additions and never touches a device.
    Ranks of a data-parallel run each keep one; ``merge`` sums them.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.tokens = 0
        self.loss_tokens = 0
        self._components: dict[str, dict[str, int]] = {k: dict.fromkeys(COMPONENTS, 0) for k in COMPONENT_KINDS}
        self._six_nd = {"six_nd": 0, "six_nd_non_embedding": 0}

    def add(self, step: StepFlops) -> None:
        """Record one training step."""
        self.steps += 1
        self.tokens += step.num_tokens
        self.loss_tokens += step.num_loss_tokens
        for kind, acc in self._components.items():
            for name, value in getattr(step, kind).items():
                acc[name] += value
        self._six_nd["six_nd"] += step.six_nd
        self._six_nd["six_nd_non_embedding"] += step.six_nd_non_embedding

    def merge(self, other: FlopLedger) -> None:
        """Add another ledger's counts to this one (e.g. another rank's)."""
        self.steps += other.steps
        self.tokens += other.tokens
        self.loss_tokens += other.loss_tokens
        for kind, acc in self._components.items():
            for name, value in other._components[kind].items():
                acc[name] += value
        for kind, value in other._six_nd.items():
            self._six_nd[kind] += value

    def total(self, kind: str = "exact") -> int:
        """Cumulative FLOPs of one kind (one of ``KINDS``)."""
        _check_kind(kind, KINDS)
        if kind in self._components:
            return sum(self._components[kind].values())
        return self._six_nd[kind]

    def components(self, kind: str = "exact") -> dict[str, int]:
        """Cumulative FLOPs per component of one of ``COMPONENT_KINDS`` (a copy)."""
        _check_kind(kind, COMPONENT_KINDS)
        return dict(self._components[kind])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly snapshot (ints only); ``from_dict`` restores it."""
        out: dict[str, Any] = {"steps": self.steps, "tokens": self.tokens, "loss_tokens": self.loss_tokens}
        for kind in COMPONENT_KINDS:
            out[kind] = {"total": self.total(kind), "components": self.components(kind)}
        out.update(self._six_nd)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlopLedger:
        """A ledger from ``to_dict`` output (e.g. when a run resumes from a checkpoint)."""
        ledger = cls()
        ledger.steps, ledger.tokens, ledger.loss_tokens = data["steps"], data["tokens"], data["loss_tokens"]
        for kind in COMPONENT_KINDS:
            ledger._components[kind].update(data[kind]["components"])
        for kind in ledger._six_nd:
            ledger._six_nd[kind] = data[kind]
        return ledger
