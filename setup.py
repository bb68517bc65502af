"""rdistill: compute-matched reasoning-distillation studies.

Packages: rdistill/ (the library), kernels/ installed as rdistill.kernels, cli/ as rdistill.cli.
"""

from setuptools import setup

setup(
    name="rdistill",
    version="0.1.0",
    description="Train students to an exact FLOP budget on IFT and reasoning data, and compare them",
    python_requires=">=3.10",
    packages=["rdistill", "rdistill.kernels", "rdistill.cli"],
    package_dir={"rdistill": "rdistill", "rdistill.kernels": "kernels", "rdistill.cli": "cli"},
    install_requires=[
        "torch>=2.6",
        "numpy>=1.26",
        "transformers>=5.0,<6",
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "datasets>=3.0",
        "pyarrow>=15",
        "typer>=0.12",
        "rich>=13",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6"],
        "gpu": ["triton>=3.6"],
    },
    entry_points={"console_scripts": ["rdistill = rdistill.cli.main:main"]},
)
