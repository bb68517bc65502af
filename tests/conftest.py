"""Test session set-up: Triton kernels run in the interpreter on CPU (read at @triton.jit time, so it
must be set before any kernel module is imported), and torch uses few threads so the suite behaves on
2-core machines."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tok():
    from rdistill.synthetic import builtin_tokenizer

    return builtin_tokenizer()


@pytest.fixture(scope="session")
def make_student():
    """A factory of small students with rdistill's packed attention: ``make_student(kind, **sizes)``,
    kind "qwen2" or "llama"; sizes override vocab_size, hidden_size, num_hidden_layers,
    intermediate_size, max_position_embeddings, num_attention_heads, num_key_value_heads, head_dim."""
    from transformers import AutoConfig

    from rdistill.model import student_from_config

    def make(kind: str, **sizes) -> torch.nn.Module:
        torch.manual_seed(0)
        fields = {**dict(vocab_size=61, hidden_size=48, num_hidden_layers=2, intermediate_size=80,
                         max_position_embeddings=64, num_attention_heads=4, num_key_value_heads=2), **sizes}
        return student_from_config(AutoConfig.for_model(kind, **fields))

    return make


@pytest.fixture
def stop_training_at(monkeypatch):
    """``stop_training_at(step, exc)``: every arm a run trains raises ``exc`` right after that step
    (as Ctrl-C or SIGTERM would arrive)."""
    import rdistill.run as run_mod

    def install(step: int, exc: type[BaseException] = KeyboardInterrupt) -> None:
        real = run_mod.train_arm

        def stopping(net, docs, cfg, **kw):
            on_step = kw["on_step"]

            def stop(rec, ledger):
                on_step(rec, ledger)
                if rec.step == step:
                    raise exc

            return real(net, docs, cfg, **{**kw, "on_step": stop})

        monkeypatch.setattr(run_mod, "train_arm", stopping)

    return install
