"""PNG plots of a study: accuracy against training FLOPs, against inference FLOPs per query, and
against total cost (training + Q x inference FLOPs) for several query volumes Q.

Every point carries its 95% Wilson interval as an error bar. Drawn on matplotlib's Agg canvas directly,
so no display and no global backend switch is needed.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rdistill.analysis._format import flops_text, pct
from rdistill.analysis.fits import FitResult
from rdistill.analysis.pareto import EQUAL_FLOPS_RTOL, pareto_front
from rdistill.analysis.points import OVERALL, X_LABELS, Point, arms_in
from rdistill.analysis.series import level_means, series
from rdistill.analysis.serving import serving_frontier, total_cost
from rdistill.analysis.stats import wilson_interval
from rdistill.io import write_bytes_atomic

PLOT_PREFIX = "accuracy_vs_"
AXES = (
    ("training", "train_flops", "training FLOPs"),
    ("inference", "inference_flops_per_query", "inference FLOPs per query"),
)
"""(axis name in file names, Point attribute, axis label) of each x axis plotted."""
TOTAL_COST = "total_cost"
"""Axis name in the file names of the total-cost plots."""
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_LINESTYLES = ("-", "--", "-.", ":")
_CHECKPOINT_MARKERS = ("*", "X", "P", "h", "8")


def _log_limits(xs: Sequence[float]) -> tuple[float, float]:
    """x limits spanning at least one decade around the data, so log ticks stay readable."""
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    pad = max(0.1 * (hi - lo), 0.5 * max(0.0, 1.0 - (hi - lo)), 0.05)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "metric"


def _plot_fit(ax: Any, fr: FitResult | None, **line: Any) -> None:
    """A fitted curve (in accuracy points) over the FLOPs it was fitted on; nothing if there is no fit.

    A degenerate fit is drawn dotted and its label (if any) says so.
    """
    if fr is not None and fr.fit is not None:
        grid = np.geomspace(fr.x_min, fr.x_max, 100)
        if fr.degenerate:
            line = {**line, "linestyle": ":", "alpha": 0.5}
            if "label" in line:
                line["label"] += " (degenerate)"
        ax.plot(grid, 100 * fr.fit.predict(grid), **line)


def _error_bars(pts: Sequence[Point], metric: str) -> np.ndarray:
    """Distances (in points) from each accuracy down and up to its 95% Wilson interval, shape (2, n)."""
    out = []
    for p in pts:
        n, acc = p.metric_n(metric), p.metric(metric)
        lo, hi = wilson_interval(acc * n, n) if n else (acc, acc)
        out.append((100 * max(acc - lo, 0.0), 100 * max(hi - acc, 0.0)))  # never below 0 by rounding
    return np.array(out, dtype=float).T.reshape(2, len(pts))


def _styles(points: Sequence[Point]) -> tuple[dict, dict, dict]:
    """Colour per (model, variant), marker and line style per arm, the same in every figure."""
    models = sorted({(p.model, p.variant) for p in points},
                    key=lambda mv: min(p.sort_key() for p in points if (p.model, p.variant) == mv))
    arms = arms_in(points)
    return ({m: _COLOURS[i % len(_COLOURS)] for i, m in enumerate(models)},
            {a: _MARKERS[i % len(_MARKERS)] for i, a in enumerate(arms)},
            {a: _LINESTYLES[i % len(_LINESTYLES)] for i, a in enumerate(arms)})


def _figure(width: float = 8.0, height: float = 5.0, panels: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())
    return path


def plot_study(
    points: Sequence[Point], metrics: Sequence[str], fits: Sequence[FitResult], out_dir: str | Path,
    *, queries: Sequence[float] = (), checkpoints: Sequence[Point] = (),
) -> list[Path]:
    """PNG plots of accuracy against training FLOPs and against inference FLOPs per query (log x).

    One figure per (axis, metric): one series per (model, arm) (colour = model and variant, marker and
    line style = arm; on the training axis the line joins the mean of each FLOP level, so replicates
    show as separate markers on one line), the Pareto frontier as a dashed black staircase with its
    points circled, the chance level where it is above zero, and on the training axis the fitted
    curves over each fit's measured range (thin, in the series' colour; arms pooled over sizes in grey;
    degenerate fits dotted). Fits are not drawn on the inference axis: inference FLOPs are not what the
    curves were fitted against. With ``queries``, one more figure per metric: accuracy against total
    cost for each volume (:func:`plot_total_cost`). ``checkpoints`` (no training FLOPs on record) appear
    on the inference axis only, as black stars, and take part in its frontier. Plots of an earlier
    report that were not written again are removed.
    """
    out = Path(out_dir)
    groups = series(points)
    arms = arms_in(points)
    colour, marker, style = _styles(points)
    fit_of = {(f.model, f.arm, f.variant, f.metric): f for f in fits}
    written: list[Path] = []
    for axis, attr, axis_label in AXES:
        for metric in metrics:
            usable = [p for p in points if getattr(p, attr) is not None and p.metric(metric) is not None]
            outside = [p for p in checkpoints if axis != "training" and getattr(p, attr) is not None
                       and p.metric(metric) is not None]
            if not usable and not outside:
                continue
            fig, (ax,) = _figure()
            for key, pts in groups.items():
                pts = [p for p in pts if p in usable]
                if not pts:
                    continue
                c = colour[(key[0], key[2])]
                ax.errorbar([getattr(p, attr) for p in pts], [100 * p.metric(metric) for p in pts],
                            yerr=_error_bars(pts, metric), marker=marker[key[1]], color=c, linestyle="none",
                            markersize=6, elinewidth=0.7, capsize=2, alpha=0.9, label=pts[0].label)
                if axis == "training":
                    means = level_means(pts, metric)
                    if len(means) > 1:
                        ax.plot([m[0] for m in means], [100 * m[1] for m in means], color=c, linestyle=style[key[1]],
                                linewidth=1.2)
                    _plot_fit(ax, fit_of.get((*key, metric)), color=c, linewidth=0.8, alpha=0.6)
            for i, p in enumerate(outside):
                ax.errorbar([getattr(p, attr)], [100 * p.metric(metric)], yerr=_error_bars([p], metric),
                            marker=_CHECKPOINT_MARKERS[i % len(_CHECKPOINT_MARKERS)], color="black",
                            linestyle="none", markersize=9, elinewidth=0.7, capsize=2,
                            label=f"{p.label} (checkpoint, training FLOPs unknown)")
            usable = usable + outside
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
            if axis == "training" and points:
                axis_label = f"training FLOPs ({X_LABELS.get(points[0].x_count, points[0].x_count)})"
            ax.set_xlabel(axis_label)
            ax.set_ylabel(f"accuracy on {metric} (%)")
            ax.set_title(f"{metric}: accuracy against {axis_label}")
            ax.grid(True, which="both", alpha=0.25)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
            written.append(_save(fig, out / f"{PLOT_PREFIX}{axis}_flops_{_slug(metric)}.png"))
    if queries:
        for metric in metrics:
            path = plot_total_cost(points, metric, queries, out / f"{PLOT_PREFIX}{TOTAL_COST}_{_slug(metric)}.png")
            if path is not None:
                written.append(path)
    for stale in out.glob(f"{PLOT_PREFIX}*.png"):
        if stale not in written:
            stale.unlink()
    return written


def plot_total_cost(points: Sequence[Point], metric: str, queries: Sequence[float], path: Path) -> Path | None:
    """Accuracy against total cost T + Q I, one panel per query volume Q, with each panel's frontier.

    None (nothing written) when no point has both an inference count and an accuracy on ``metric``.
    """
    usable = [p for p in points if p.inference_flops_per_query is not None and p.metric(metric) is not None]
    if not usable:
        return None
    from matplotlib.ticker import NullFormatter

    colour, marker, _ = _styles(points)
    fig, axes = _figure(4.2 * len(queries) + 1.5, 4.2, len(queries))
    for ax, q in zip(axes, queries):
        for key, pts in series(usable).items():
            ax.errorbar([total_cost(p, q) for p in pts], [100 * p.metric(metric) for p in pts],
                        yerr=_error_bars(pts, metric), marker=marker[key[1]], color=colour[(key[0], key[2])], linestyle="none",
                        markersize=5, elinewidth=0.6, capsize=2, label=pts[0].label)
        front = serving_frontier(usable, metric, q)
        ax.step([total_cost(p, q) for p in front], [100 * p.metric(metric) for p in front], where="post",
                color="black", linestyle="--", linewidth=1.0, label="frontier")
        ax.set_xscale("log")
        ax.set_xlim(*_log_limits([total_cost(p, q) for p in usable]))
        ax.xaxis.set_minor_formatter(NullFormatter())  # narrow panels: decade labels only
        ax.set_title(f"Q = {flops_text(q)} queries", fontsize=9)
        ax.set_xlabel("training + Q x inference FLOPs")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel(f"accuracy on {metric} (%)")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"{metric}: accuracy against total cost of training and serving Q queries", fontsize=10)
    return _save(fig, path)
