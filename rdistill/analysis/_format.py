"""Number formats shared by the report's statements, tables and plots."""

from __future__ import annotations


def pct(v: float) -> str:
    """An accuracy fraction as a percentage with one decimal: ``0.123`` -> ``"12.3%"``."""
    return f"{100.0 * v:.1f}%"


def flops_text(v: float | None) -> str:
    """A FLOP count in short scientific notation (``"1.00e13"``); ``"-"`` when unknown."""
    return "-" if v is None else f"{v:.2e}".replace("e+", "e")
