"""PNG plots of a study: accuracy against training FLOPs and against inference FLOPs per query.

Drawn on matplotlib's Agg canvas directly, so no display and no global backend switch is needed.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rdistill.analysis._format import pct
from rdistill.analysis.fits import FitResult
from rdistill.analysis.pareto import EQUAL_FLOPS_RTOL, pareto_front
from rdistill.analysis.points import OVERALL, Point, arms_in
from rdistill.analysis.series import level_means, series
from rdistill.io import write_bytes_atomic

PLOT_PREFIX = "accuracy_vs_"
AXES = (
    ("training", "train_flops", "training FLOPs"),
    ("inference", "inference_flops_per_query", "inference FLOPs per query"),
)
"""(axis name in file names, Point attribute, axis label) of each x axis plotted."""
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_LINESTYLES = ("-", "--", "-.", ":")


def _log_limits(xs: Sequence[float]) -> tuple[float, float]:
    """x limits spanning at least one decade around the data, so log ticks stay readable."""
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    pad = max(0.1 * (hi - lo), 0.5 * max(0.0, 1.0 - (hi - lo)), 0.05)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "metric"


def _plot_fit(ax: Any, fr: FitResult | None, **line: Any) -> None:
    """A fitted curve (in accuracy points) over the FLOPs it was fitted on; nothing if there is no fit."""
    if fr is not None and fr.fit is not None:
        grid = np.geomspace(fr.x_min, fr.x_max, 100)
        ax.plot(grid, 100 * fr.fit.predict(grid), **line)


def plot_study(
    points: Sequence[Point], metrics: Sequence[str], fits: Sequence[FitResult], out_dir: str | Path
) -> list[Path]:
    """PNG plots of accuracy against training FLOPs and against inference FLOPs per query (log x).

    One figure per (axis, metric): one series per (model, arm) (colour = model and variant, marker and
    line style = arm; on the training axis the line joins the mean of each FLOP level, so replicates
    show as separate markers on one line), the Pareto frontier as a dashed black staircase with its
    points circled, the chance level where it is above zero, and on the training axis the fitted
    curves over each fit's measured range (thin, in the series' colour; arms pooled over sizes in grey).
    Fits are not drawn on the inference axis: inference FLOPs are not what the curves were fitted
    against. Plots of an earlier report that were not written again are removed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    groups = series(points)
    models = sorted({(p.model, p.variant) for p in points},
                    key=lambda mv: min(p.sort_key() for p in points if (p.model, p.variant) == mv))
    arms = arms_in(points)
    colour = {m: _COLOURS[i % len(_COLOURS)] for i, m in enumerate(models)}
    marker = {a: _MARKERS[i % len(_MARKERS)] for i, a in enumerate(arms)}
    style = {a: _LINESTYLES[i % len(_LINESTYLES)] for i, a in enumerate(arms)}
    fit_of = {(f.model, f.arm, f.variant, f.metric): f for f in fits}
    written: list[Path] = []
    for axis, attr, axis_label in AXES:
        for metric in metrics:
            usable = [p for p in points if getattr(p, attr) is not None and p.metric(metric) is not None]
            if not usable:
                continue
            fig = Figure(figsize=(8.0, 5.0))
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            for key, pts in groups.items():
                pts = [p for p in pts if p in usable]
                if not pts:
                    continue
                c = colour[(key[0], key[2])]
                ax.plot([getattr(p, attr) for p in pts], [100 * p.metric(metric) for p in pts], marker=marker[key[1]],
                        color=c, linestyle="none", markersize=6, label=pts[0].label)
                if axis == "training":
                    means = level_means(pts, metric)
                    if len(means) > 1:
                        ax.plot([m[0] for m in means], [100 * m[1] for m in means], color=c, linestyle=style[key[1]],
                                linewidth=1.2)
                    _plot_fit(ax, fit_of.get((*key, metric)), color=c, linewidth=0.8, alpha=0.6)
            if axis == "training":
                for arm in arms:
                    fr = fit_of.get((None, arm, "", metric))
                    if fr is not None and fr.fit is not None:
                        _plot_fit(ax, fr, color="0.45", linestyle=style[arm], linewidth=1.0,
                                  label=f"fit: {arm}, all sizes (MAE {100 * fr.fit.mae:.1f} pts)")
            front = pareto_front(usable, attr, metric, rtol=EQUAL_FLOPS_RTOL)
            fx = [getattr(p, attr) for p in front]
            fy = [100 * p.metric(metric) for p in front]
            ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1.0, label="Pareto frontier")
            ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", linewidths=1.2, zorder=5)
            chance = max((p.chance.get(metric, 0.0) for p in usable), default=0.0) if metric != OVERALL else 0.0
            if chance > 0:
                ax.axhline(100 * chance, color="0.6", linestyle=":", linewidth=1.0, label=f"chance ({pct(chance)})")
            ax.set_xscale("log")
            ax.set_xlim(*_log_limits([getattr(p, attr) for p in usable]))
            ax.set_xlabel(axis_label)
            ax.set_ylabel(f"accuracy on {metric} (%)")
            ax.set_title(f"{metric}: accuracy against {axis_label}")
            ax.grid(True, which="both", alpha=0.25)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            path = out / f"{PLOT_PREFIX}{axis}_flops_{_slug(metric)}.png"
            write_bytes_atomic(path, buf.getvalue())
            written.append(path)
    for stale in out.glob(f"{PLOT_PREFIX}*.png"):
        if stale not in written:
            stale.unlink()
    return written
