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
    from rdistill.tokenizer import builtin_tokenizer

    return builtin_tokenizer()
