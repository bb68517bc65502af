"""Study reports: collect every run of a study, find Pareto frontiers, fit the paper's curves, plot, write.

A study folder holds run folders, each with the ``results.json`` that ``rdistill.run`` writes. Every
evaluated arm of every run is one :class:`Point`: a student (model preset or local checkpoint) trained
on one supervision format (arm) to one FLOP budget, with its training FLOPs, inference FLOPs per query,
accuracy (overall and per task family) and output lengths.

What the report answers is the paper's question at equal compute:

- Pareto frontiers of accuracy against training FLOPs and against inference FLOPs per query (minimise
  FLOPs, maximise accuracy), overall and per task family;
- the paper's saturating fit ``f(x) = a + b (1 - exp(-g x^k))`` with ``a, b > 0``, ``a + b <= ceiling``
  (the teacher's accuracy), ``g > 0``, ``0 < k <= 1``, minimising mean absolute error, per student and
  arm when it has enough budgets, and per arm pooled over student sizes (as the paper pools sizes);
- compute-equivalent statements read off the study's own points: who wins at each matched budget and
  by how much (with the sampling error of the difference), and how many times the training FLOPs one
  configuration needs to reach the accuracy another reaches;
- output-length tables, wrong answers against right ones.

Everything is computed from the results files; nothing is assumed about the data. The built-in
synthetic teacher is always right, so the default ceiling is 1.0; pass the teacher's accuracy (per
family if known) for other data.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rdistill import __version__
from rdistill.io import write_bytes_atomic, write_text_atomic

OVERALL = "overall"
MIN_FIT_POINTS = 4
MIN_FIT_DISTINCT_X = 3
EQUAL_FLOPS_RTOL = 0.01
FULL_BUDGET = 0.99
REPORT_DIR = "report"
PLOT_PREFIX = "accuracy_vs_"


class StudyError(ValueError):
    """The study folder cannot be reported on (missing, or it holds no results.json)."""


# ----------------------------------------------------------------------------------------------------
# Collecting points
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Point:
    """One evaluated arm of one run: a (student, arm, budget) configuration and what it measured.

    Accuracies are fractions in [0, 1]. ``variant`` is empty unless the same (model, arm) was run with
    different learning rates in the study; then it names the learning rate, so that those runs form
    separate series instead of being mixed into one curve. ``budget_used`` is the fraction of the
    budget spent (in the ``budget_kind`` count); a run stopped early by its data is below 1. Points
    compare by identity: two runs of one configuration are two points, even with equal numbers.
    """

    model: str
    params: int | None
    arm: str
    budget: float | None
    train_flops: float
    inference_flops_per_query: float | None
    accuracy: float
    by_family: dict[str, float]
    chance: dict[str, float]
    n: int
    n_by_family: dict[str, int]
    mean_output_tokens: float | None
    mean_output_tokens_correct: float | None
    mean_output_tokens_wrong: float | None
    source: Path
    lr: float | None = None
    budget_kind: str | None = None
    budget_used: float | None = None
    stopped_by: str | None = None
    variant: str = ""

    @property
    def model_name(self) -> str:
        """The preset name, or a local checkpoint's folder name."""
        return Path(self.model).name if ("/" in self.model or os.sep in self.model) else self.model

    @property
    def label(self) -> str:
        """``arm-model`` as in the paper's phrasing ("ift-small"), plus the variant if any."""
        base = f"{self.arm}-{self.model_name}"
        return f"{base} ({self.variant})" if self.variant else base

    @property
    def series_key(self) -> tuple[str, str, str]:
        """Points that share this key form one accuracy-against-budget curve."""
        return (self.model, self.arm, self.variant)

    def metric(self, name: str) -> float | None:
        """Accuracy on ``name``: ``"overall"`` or a task family; None if the family was not evaluated."""
        return self.accuracy if name == OVERALL else self.by_family.get(name)

    def metric_n(self, name: str) -> int:
        """How many held-out examples the accuracy on ``name`` was measured on."""
        return self.n if name == OVERALL else int(self.n_by_family.get(name, 0))

    def sort_key(self) -> tuple:
        """A total, input-order-independent order: student size, model, arm, variant, budget, source."""
        return (
            self.params if self.params is not None else -1,
            self.model,
            _arm_order(self.arm),
            self.variant,
            self.budget if self.budget is not None else -1.0,
            self.train_flops,
            str(self.source),
        )


@dataclass(frozen=True)
class Skipped:
    """An arm (or a whole results file) that produced no point, and why."""

    source: Path
    model: str | None
    arm: str | None
    budget: float | None
    status: str
    reason: str


@dataclass
class Study:
    """Everything read from a study folder."""

    root: Path
    points: list[Point]
    skipped: list[Skipped]
    run_status: dict[Path, str] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        """``"overall"`` then every task family seen, sorted."""
        fams = sorted({f for p in self.points for f in p.by_family})
        return [OVERALL, *fams]


def _arm_order(arm: str) -> tuple:
    """ift first, then sequential and mixed curricula by reasoning share, reasoning last, others by name."""
    m = re.fullmatch(r"(seq|mix)(\d+)", arm)
    if arm == "ift":
        return (0, 0, "")
    if m:
        return (1 if m.group(1) == "seq" else 2, int(m.group(2)), "")
    if arm == "reasoning":
        return (3, 0, "")
    return (4, 0, arm)


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _point_from_arm(arm: dict, config: dict, source: Path) -> Point | Skipped:
    model = arm.get("model") or config.get("model") or "?"
    name = arm.get("name") or "?"
    budget = _num(arm.get("budget_flops"))
    ev = arm.get("eval")
    status = arm.get("status") or ("complete" if ev else "unknown")

    def skip(reason: str, st: str = status) -> Skipped:
        return Skipped(source, model, name, budget, st, reason)

    if status != "complete":
        return skip(str(arm.get("error") or "no reason recorded"))
    if not isinstance(ev, dict):
        return skip("trained but not evaluated (no eval block)")
    acc = _num(ev.get("accuracy"))
    if acc is None:
        return skip("evaluation has no accuracy (empty held-out set?)")
    train = _num((arm.get("flops") or {}).get("exact"))
    if train is None or train <= 0:
        return skip("no exact training FLOP count")
    params = (arm.get("parameters") or {}).get("total")
    inf = _num((ev.get("inference_flops_per_query") or {}).get("exact"))
    by_family = {f: float(v) for f, v in (ev.get("by_family") or {}).items() if _num(v) is not None}
    chance = {f: float(v or 0.0) for f, v in (ev.get("chance") or {}).items()}
    n = int(ev.get("n") or 0)
    n_by_family = {f: int(v) for f, v in (ev.get("n_by_family") or {}).items()}
    if not n_by_family and by_family and n:
        n_by_family = {f: n // len(by_family) for f in by_family}
    return Point(
        model=str(model),
        params=int(params) if isinstance(params, int) else None,
        arm=str(name),
        budget=budget,
        train_flops=train,
        inference_flops_per_query=inf if inf is not None and inf > 0 else None,
        accuracy=acc,
        by_family=by_family,
        chance=chance,
        n=n,
        n_by_family=n_by_family,
        mean_output_tokens=_num(ev.get("mean_output_tokens")),
        mean_output_tokens_correct=_num(ev.get("mean_output_tokens_correct")),
        mean_output_tokens_wrong=_num(ev.get("mean_output_tokens_wrong")),
        source=source,
        lr=_num(arm.get("lr")),
        budget_kind=arm.get("budget_kind") if budget is not None else None,
        budget_used=_num(arm.get("budget_used")),
        stopped_by=arm.get("stopped_by"),
    )


def _with_variants(points: list[Point]) -> list[Point]:
    """Name the learning rate in each point whose (model, arm) was run with several learning rates."""
    lrs: dict[tuple[str, str], set] = defaultdict(set)
    for p in points:
        lrs[(p.model, p.arm)].add(p.lr)
    out = []
    for p in points:
        if len(lrs[(p.model, p.arm)]) > 1:
            variant = f"lr={p.lr:g}" if p.lr is not None else "lr=?"
            p = replace(p, variant=variant)
        out.append(p)
    return out


def scan(study_dir: str | Path) -> Study:
    """Read every ``results.json`` under ``study_dir`` (recursively): points, skipped arms, run statuses.

    An arm without ``status`` counts as complete when it has an ``eval`` block (older results files).
    Arms that are not complete, or not evaluated, are not points but are kept in ``skipped`` so the
    report can count and list them. A results file that cannot be parsed is skipped the same way.
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise StudyError(f"study folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("results.json") if REPORT_DIR not in p.relative_to(root).parts[:1])
    if not files:
        raise StudyError(
            f"no results.json found under {root}; a study folder holds run folders, each written by "
            "'rdistill train' or 'rdistill sweep'"
        )
    points: list[Point] = []
    skipped: list[Skipped] = []
    run_status: dict[Path, str] = {}
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            arms = doc["arms"]
            if not isinstance(arms, list):
                raise TypeError("'arms' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            skipped.append(Skipped(path, None, None, None, "unreadable", f"{type(exc).__name__}: {exc}"))
            run_status[path] = "unreadable"
            continue
        run_status[path] = str(doc.get("status", "unknown"))
        config = doc.get("config") or {}
        for arm in arms:
            got = _point_from_arm(arm, config, path)
            (points if isinstance(got, Point) else skipped).append(got)
    points = sorted(_with_variants(points), key=Point.sort_key)
    return Study(root, points, skipped, run_status)


def collect(study_dir: str | Path) -> list[Point]:
    """One :class:`Point` per evaluated, complete (run, arm) under ``study_dir``, in a stable order.

    Raises :class:`StudyError` if the folder holds no results.json. Use :func:`scan` to also get the
    arms that were skipped (failed, interrupted, not evaluated).
    """
    return scan(study_dir).points


# ----------------------------------------------------------------------------------------------------
# Pareto frontiers
# ----------------------------------------------------------------------------------------------------

Key = str | Callable[[Point], float | None]


def _getter(key: Key) -> Callable[[Point], float | None]:
    """A point attribute (``"train_flops"``), a metric (``"overall"``, ``"math-oe"``), or a function."""
    if callable(key):
        return key
    if key in Point.__dataclass_fields__:
        return lambda p: getattr(p, key)
    return lambda p: p.metric(key)


def flop_levels(xs: Iterable[float], rtol: float = EQUAL_FLOPS_RTOL) -> dict[float, float]:
    """Map each FLOP value to its level: values within ``rtol`` of a level's smallest value share it.

    Runs trained to the same budget stop within one optimizer step of it, so their exact FLOPs differ
    in the last digits; they are the same compute. Levels are built from the smallest value up, which
    makes the grouping deterministic.
    """
    out: dict[float, float] = {}
    start: float | None = None
    for v in sorted(set(float(x) for x in xs)):
        if start is None or v > start * (1.0 + rtol):
            start = v
        out[v] = start
    return out


def pareto_front(points: Iterable[Point], x: Key, y: Key, *, rtol: float = 0.0) -> list[Point]:
    """The points no other point beats: minimise ``x``, maximise ``y``; returned by increasing ``x``.

    A point is on the frontier if every point with x at most its x has a strictly lower y. So a point
    with the same y as a cheaper point, or the same x as a better point, is dominated. x values within
    ``rtol`` of each other count as equal (see :func:`flop_levels`; 0 means exact comparison). Of
    points with equal x and y only the first in :meth:`Point.sort_key` order is kept, so the answer
    does not depend on the input order. Points whose x or y is missing or not finite are ignored.
    """
    gx, gy = _getter(x), _getter(y)
    rows = []
    for p in points:
        vx, vy = gx(p), gy(p)
        if vx is None or vy is None or not (math.isfinite(vx) and math.isfinite(vy)):
            continue
        rows.append((vx, -vy, p.sort_key(), p))
    level = flop_levels([r[0] for r in rows], rtol)
    rows = [(level[float(r[0])], *r[1:]) for r in rows]
    rows.sort(key=lambda r: r[:3])
    front: list[Point] = []
    best = -math.inf
    for _vx, neg_vy, _key, p in rows:
        if -neg_vy > best:
            front.append(p)
            best = -neg_vy
    return front


# ----------------------------------------------------------------------------------------------------
# The saturating fit
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """``f(x) = a + b (1 - exp(-g x^k))`` fitted to accuracy against FLOPs.

    ``a`` is the accuracy the curve starts from, ``a + b`` the accuracy it saturates at (at most
    ``ceiling``), ``k`` how gradually it bends. The fit is done on ``x / x_ref`` (``x_ref`` the smallest
    FLOP count fitted) so that the optimiser sees numbers near 1; ``g_scaled`` is the rate in that unit
    and ``g = g_scaled * x_ref ** -k`` the rate for x in FLOPs. ``mae`` is the mean absolute error of
    the fit on its ``n`` points, in the same unit as accuracy.
    """

    a: float
    b: float
    g: float
    k: float
    mae: float
    n: int = 0
    ceiling: float = 1.0
    x_ref: float = 1.0
    g_scaled: float = 0.0

    def predict(self, x: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """Fitted accuracy at ``x`` FLOPs."""
        xs = np.asarray(x, dtype=float) / self.x_ref
        return self.a - self.b * np.expm1(-self.g_scaled * xs**self.k)

    def flops_for(self, accuracy: float) -> float | None:
        """FLOPs at which the fitted curve reaches ``accuracy``; None outside ``(a, a + b)``."""
        frac = (accuracy - self.a) / self.b
        if not 0.0 < frac < 1.0:
            return None
        t = -math.log1p(-frac)
        return self.x_ref * (t / self.g_scaled) ** (1.0 / self.k)


def fit_problem(x: Sequence[float], y: Sequence[float], *, min_points: int = MIN_FIT_POINTS) -> str | None:
    """Why these points cannot be fitted (too few points, too few distinct FLOP levels), or None.

    Four parameters need at least four points, and at least three distinct FLOP levels (values more
    than 1% apart, see :func:`flop_levels`) for the bend of the curve to mean anything.
    """
    if len(x) < min_points:
        return f"{len(x)} point{'s' if len(x) != 1 else ''}, need at least {min_points}"
    distinct = len(set(flop_levels(x).values()))
    if distinct < MIN_FIT_DISTINCT_X:
        return f"{distinct} distinct FLOP level{'s' if distinct != 1 else ''}, need at least {MIN_FIT_DISTINCT_X}"
    return None


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


_CLIP_UNIT = 30.0
_CLIP_RATE = (-60.0, 40.0)


def _unpack(theta: np.ndarray, ceiling: float) -> tuple[float, float, float, float]:
    """Unconstrained parameters to (a, b, g_scaled, k), satisfying every constraint by construction.

    s = ceiling * sigmoid(p) is a + b, so 0 < a + b < ceiling; a = s * sigmoid(q) and b = s * sigmoid(-q)
    are both positive; g_scaled = exp(r) > 0; k = sigmoid(w) in (0, 1). The unconstrained values are
    clipped to a range where no sigmoid rounds to exactly 0 or 1, so the constraints hold in floating
    point too.
    """
    p, q, r, w = (float(v) for v in theta)
    p, q, w = (min(max(v, -_CLIP_UNIT), _CLIP_UNIT) for v in (p, q, w))
    r = min(max(r, _CLIP_RATE[0]), _CLIP_RATE[1])
    s = ceiling * _sigmoid(p)
    return s * _sigmoid(q), s * _sigmoid(-q), math.exp(r), _sigmoid(w)


def _nelder_mead(
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    step: np.ndarray,
    *,
    max_iter: int,
    xatol: float = 1e-8,
    fatol: float = 1e-12,
) -> tuple[np.ndarray, float]:
    """Minimise ``f`` from ``x0`` by the Nelder-Mead simplex method (standard coefficients 1, 2, 1/2, 1/2).

    Derivative-free because mean absolute error has no gradient at its minimum; deterministic.
    """
    n = len(x0)
    simplex = np.vstack([x0] + [x0 + step[i] * np.eye(n)[i] for i in range(n)])
    values = np.array([f(v) for v in simplex])
    for _ in range(max_iter):
        order = np.argsort(values, kind="stable")
        simplex, values = simplex[order], values[order]
        if np.max(np.abs(simplex[1:] - simplex[0])) <= xatol and values[-1] - values[0] <= fatol:
            break
        centroid = simplex[:-1].mean(axis=0)
        worst = simplex[-1]
        xr = 2.0 * centroid - worst
        fr = f(xr)
        if fr < values[0]:
            xe = 3.0 * centroid - 2.0 * worst
            fe = f(xe)
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
            continue
        if fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
            continue
        if fr < values[-1]:
            xc = centroid + 0.5 * (xr - centroid)
            fc = f(xc)
            accepted = fc <= fr
        else:
            xc = centroid + 0.5 * (worst - centroid)
            fc = f(xc)
            accepted = fc < values[-1]
        if accepted:
            simplex[-1], values[-1] = xc, fc
            continue
        simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
        values[1:] = [f(v) for v in simplex[1:]]
    best = int(np.argmin(values))
    return simplex[best].copy(), float(values[best])


def _starts(logx: np.ndarray, y: np.ndarray, ceiling: float, count: int) -> list[np.ndarray]:
    """The ``count`` best points of a deterministic grid over the curve's shape, as unconstrained starts.

    The grid spans the bend k (0.1 to 0.95) and the FLOPs at which the curve is half-way up (from a
    little below to a little above the fitted range, which sets g). For each shape, a and b are the
    least-squares line of y on 1 - exp(-g x^k), pulled strictly inside the constraints; the shapes are
    ranked by mean absolute error, all in one vectorised pass.
    """
    span = max(float(logx.max()), 1e-9)
    ks = np.linspace(0.1, 0.95, 10)
    half = np.linspace(-0.25, 1.25, 16) * span
    kk, hh = (m.ravel() for m in np.meshgrid(ks, half, indexing="ij"))
    gs = math.log(2.0) * np.exp(-kk * hh)
    phi = -np.expm1(-gs[:, None] * np.exp(kk[:, None] * logx[None, :]))
    pm, ym = phi.mean(axis=1), float(y.mean())
    var = ((phi - pm[:, None]) ** 2).mean(axis=1)
    cov = ((phi - pm[:, None]) * (y - ym)[None, :]).mean(axis=1)
    b = np.clip(np.divide(cov, var, out=np.zeros_like(cov), where=var > 1e-12), 1e-3 * ceiling, 0.98 * ceiling)
    a = np.clip(ym - b * pm, 1e-3 * ceiling, 0.98 * ceiling)
    total = a + b
    shrink = np.minimum(1.0, 0.99 * ceiling / total)
    a, b, total = a * shrink, b * shrink, total * shrink
    mae = np.abs(y[None, :] - (a[:, None] + b[:, None] * phi)).mean(axis=1)
    best = np.argsort(mae, kind="stable")[:count]
    return [np.array([_logit(total[i] / ceiling), _logit(a[i] / total[i]), math.log(gs[i]), _logit(kk[i])]) for i in best]


def fit_saturating(
    x: Sequence[float], y: Sequence[float], ceiling: float = 1.0, *, min_points: int = MIN_FIT_POINTS
) -> Fit | None:
    """The paper's fit of accuracy ``y`` against FLOPs ``x``, minimising mean absolute error.

    Constraints a > 0, b > 0, a + b <= ceiling, g > 0, 0 < k <= 1 hold by construction (see
    :func:`_unpack`), whatever the data: decreasing, flat or above the ceiling. x is divided by its
    smallest value before fitting (see :class:`Fit` for how g relates back to FLOPs). Optimisation: the
    four best shapes of a fixed grid (:func:`_starts`) each start a Nelder-Mead search, restarted from
    its own optimum until it stops improving; the best is kept (first of equals), so the result is
    deterministic. Returns None when :func:`fit_problem` finds too few points (it says why).
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {xa.shape} and {ya.shape}")
    if not np.all(np.isfinite(xa)) or np.any(xa <= 0):
        raise ValueError("FLOP values must be finite and positive")
    if not np.all(np.isfinite(ya)):
        raise ValueError("accuracies must be finite")
    if not (math.isfinite(ceiling) and ceiling > 0):
        raise ValueError(f"ceiling must be a positive number, got {ceiling}")
    if fit_problem(list(xa), list(ya), min_points=min_points) is not None:
        return None
    x_ref = float(xa.min())
    logx = np.log(xa / x_ref)
    n = len(xa)

    def loss(theta: np.ndarray) -> float:
        a, b, gs, k = _unpack(theta, ceiling)
        pred = a - b * np.expm1(-gs * np.exp(k * logx))
        return float(np.abs(ya - pred).sum()) / n

    step = np.array([0.5, 0.5, 1.0, 0.5])
    best_theta, best_val = None, math.inf
    for start in _starts(logx, ya, ceiling, count=4):
        theta, val = _nelder_mead(loss, start, step, max_iter=600)
        for _ in range(4):
            again, val2 = _nelder_mead(loss, theta, step * 0.2, max_iter=400)
            improved = val2 < val - 1e-12
            if val2 <= val:
                theta, val = again, val2
            if not improved:
                break
        if val < best_val:
            best_theta, best_val = theta, val
    a, b, gs, k = _unpack(best_theta, ceiling)
    return Fit(a=a, b=b, g=gs * x_ref ** (-k), k=k, mae=best_val, n=len(xa), ceiling=ceiling, x_ref=x_ref, g_scaled=gs)


# ----------------------------------------------------------------------------------------------------
# Fits over a study
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    """A fit (or why there is none) of one curve: a student-and-arm series, or an arm pooled over sizes."""

    label: str
    arm: str
    model: str | None
    variant: str
    metric: str
    n: int
    fit: Fit | None
    reason: str | None
    x_min: float | None
    x_max: float | None

    @property
    def pooled(self) -> bool:
        return self.model is None


def series(points: Iterable[Point]) -> dict[tuple[str, str, str], list[Point]]:
    """Points grouped into (model, arm, variant) curves, each sorted by training FLOPs, in a stable order."""
    groups: dict[tuple[str, str, str], list[Point]] = defaultdict(list)
    for p in sorted(points, key=Point.sort_key):
        groups[p.series_key].append(p)
    return {k: sorted(v, key=lambda p: (p.train_flops, p.sort_key())) for k, v in groups.items()}


def _ceiling_for(ceiling: float | Mapping[str, float], metric: str) -> float:
    if isinstance(ceiling, Mapping):
        if metric not in ceiling:
            raise ValueError(f"no ceiling (teacher accuracy) given for {metric!r}; have {sorted(ceiling)}")
        return float(ceiling[metric])
    return float(ceiling)


def _fit_one(
    label: str, arm: str, model: str | None, variant: str, metric: str, pts: list[Point], ceiling: float
) -> FitResult:
    usable = [p for p in pts if p.metric(metric) is not None]
    xs = [p.train_flops for p in usable]
    ys = [p.metric(metric) for p in usable]
    reason = fit_problem(xs, ys)
    fit = fit_saturating(xs, ys, ceiling) if reason is None else None
    return FitResult(label, arm, model, variant, metric, len(usable), fit, reason,
                     min(xs) if xs else None, max(xs) if xs else None)


def fit_study(
    points: Sequence[Point], metrics: Sequence[str], ceiling: float | Mapping[str, float] = 1.0
) -> list[FitResult]:
    """Fits of accuracy against training FLOPs for every metric: per series, then per arm pooled over sizes.

    A series (one student, one arm) is fitted across its budgets; an arm pooled over sizes is fitted on
    every point of that arm, as the paper fits each format across its five student sizes.
    """
    out: list[FitResult] = []
    groups = series(points)
    arms = sorted({p.arm for p in points}, key=_arm_order)
    for metric in metrics:
        c = _ceiling_for(ceiling, metric)
        for (model, arm, variant), pts in groups.items():
            out.append(_fit_one(pts[0].label, arm, model, variant, metric, pts, c))
        for arm in arms:
            pts = [p for p in points if p.arm == arm]
            out.append(_fit_one(f"{arm} (all sizes)", arm, None, "", metric, pts, c))
    return out


# ----------------------------------------------------------------------------------------------------
# Compute-equivalent statements
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One sentence read off the data.

    ``kind`` is "budget" (matched training budget) or "equal" (training FLOPs for equal accuracy);
    ``method`` says how it was computed ("measured", "fit", "interpolation"). ``ok`` is False when the
    comparison could not be made; then ``subject`` names the pair and ``why`` says what was missing,
    without the metric, so the report can group such notes.
    """

    kind: str
    metric: str
    text: str
    method: str = ""
    ok: bool = True
    subject: str = ""
    why: str = ""


def _pct(v: float) -> str:
    return f"{100.0 * v:.1f}%"


def _flops(v: float | None) -> str:
    return "-" if v is None else f"{v:.2e}".replace("e+", "e")


def _budget_key(b: float) -> float:
    return float(f"{b:.6g}")


def _spent_budget(p: Point) -> bool:
    """Whether a budgeted run spent (nearly) all of its budget; one stopped early is not matched compute."""
    return p.budget_used is None or p.budget_used >= FULL_BUDGET


def _budget_text(budget: float, kind: str | None) -> str:
    count = f" ({kind} count)" if kind and kind != "exact" else ""
    return f"{_flops(budget)} training FLOPs{count}"


@dataclass(frozen=True)
class _Config:
    """A (series, budget) configuration: its replicates' mean accuracy and total held-out size."""

    label: str
    arm: str
    accuracy: float
    n: int
    runs: int
    key: tuple


def _configs(pts: Sequence[Point], metric: str) -> list[_Config]:
    """Replicates of one configuration averaged, so a lucky run is not picked as the configuration."""
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in pts:
        if p.metric(metric) is not None:
            groups[p.series_key].append(p)
    out = []
    for g in groups.values():
        g = sorted(g, key=Point.sort_key)
        acc = statistics.fmean(p.metric(metric) for p in g)
        runs = f" (mean of {len(g)} runs)" if len(g) > 1 else ""
        out.append(_Config(g[0].label + runs, g[0].arm, acc, sum(p.metric_n(metric) for p in g), len(g), g[0].sort_key()))
    return sorted(out, key=lambda c: (-c.accuracy, c.key))


def compare_at_budget(points: Sequence[Point], metrics: Sequence[str]) -> list[Statement]:
    """At each FLOP budget, the best configuration per metric against the best of every other arm.

    A configuration is one student, arm (and variant) at one budget; replicate runs of it are averaged.
    Each statement gives both accuracies, the difference in points and the standard error of that
    difference from the held-out set sizes (binomial); a difference within two standard errors is
    flagged as not a clear win. Only runs trained to a FLOP budget, and that spent at least 99% of
    it, take part (a run its data stopped early is not at matched compute).
    """
    out: list[Statement] = []
    by_budget: dict[tuple[float, str], list[Point]] = defaultdict(list)
    for p in points:
        if p.budget is not None and _spent_budget(p):
            by_budget[(_budget_key(p.budget), p.budget_kind or "exact")].append(p)
    for metric in metrics:
        for budget, kind in sorted(by_budget):
            where = _budget_text(budget, kind)
            ranked = _configs(by_budget[(budget, kind)], metric)
            if not ranked:
                continue
            win = ranked[0]
            others: dict[str, _Config] = {}
            for c in ranked[1:]:
                if c.arm != win.arm and c.arm not in others:
                    others[c.arm] = c
            if not others:
                out.append(Statement("budget", metric, f"at {where}, only arm {win.arm} was run; best on {metric}: "
                                     f"{win.label} ({_pct(win.accuracy)})", "measured"))
                continue
            for arm in sorted(others, key=_arm_order):
                other = others[arm]
                diff = 100.0 * (win.accuracy - other.accuracy)
                se = _se_diff(win.accuracy, win.n, other.accuracy, other.n)
                if diff == 0:
                    head = f"at {where}, {win.label} and {other.label} tie on {metric} ({_pct(win.accuracy)})"
                else:
                    head = (f"at {where}, {win.label} beats {other.label} by {diff:.1f} points on {metric} "
                            f"({_pct(win.accuracy)} vs {_pct(other.accuracy)})")
                if se is None:
                    tail = "; held-out set sizes unknown, no error estimate"
                else:
                    tail = f"; s.e. of the difference (held-out sampling) {100.0 * se:.1f} points"
                    if diff != 0 and diff < 200.0 * se:
                        tail += ", within two s.e.: not a clear win"
                out.append(Statement("budget", metric, head + tail, "measured"))
    return out


def _se_diff(p1: float, n1: int, p2: float, n2: int) -> float | None:
    """Binomial standard error of the difference of two accuracies measured on n1 and n2 examples."""
    if n1 <= 0 or n2 <= 0:
        return None
    return math.sqrt(max(p1 * (1 - p1), 0.0) / n1 + max(p2 * (1 - p2), 0.0) / n2)


def _level_means(pts: Sequence[Point], metric: str) -> list[tuple[float, float]]:
    """(mean training FLOPs, mean accuracy) of each FLOP level of a series, by increasing FLOPs."""
    usable = [(p.train_flops, p.metric(metric)) for p in pts if p.metric(metric) is not None]
    level = flop_levels(x for x, _ in usable)
    groups: dict[float, list[tuple[float, float]]] = defaultdict(list)
    for x, y in usable:
        groups[level[x]].append((x, y))
    return [(statistics.fmean(x for x, _ in groups[k]), statistics.fmean(y for _, y in groups[k])) for k in sorted(groups)]


def _envelope(pts: Sequence[Point], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per FLOP level: log10 of its mean FLOPs, and the running maximum of its mean accuracy.

    Replicates at one level are averaged; the running maximum means more compute is never counted as
    worse than the best already reached at less.
    """
    means = _level_means(pts, metric)
    if not means:
        return np.array([]), np.array([])
    return np.log10([m[0] for m in means]), np.maximum.accumulate([m[1] for m in means])


def interpolated_flops_for(pts: Sequence[Point], metric: str, accuracy: float) -> float | None:
    """Least training FLOPs at which a series' measured accuracy reaches ``accuracy``.

    Linear interpolation in log10 FLOPs on the running maximum of the per-level mean accuracies. None
    if the level is at or below the first measurement (it would be extrapolation), above the best
    one, or there are fewer than two FLOP levels.
    """
    lx, env = _envelope(pts, metric)
    if len(lx) < 2 or accuracy <= env[0] or accuracy > env[-1]:
        return None
    i = int(np.argmax(env >= accuracy))
    t = (accuracy - env[i - 1]) / (env[i] - env[i - 1])
    return float(10 ** (lx[i - 1] + t * (lx[i] - lx[i - 1])))


def _needs_text(la: str, lb: str, xa: float, xb: float) -> str:
    """"A needs 2.1x the training FLOPs of B", with "(2.1x fewer)" spelled out when A needs less."""
    r = xa / xb
    fewer = f" ({1 / r:.3g}x fewer)" if r < 1 else ""
    return f"{la} needs {r:.3g}x the training FLOPs of {lb}{fewer}"


def equal_accuracy_statements(
    points: Sequence[Point], metrics: Sequence[str], fits: Sequence[FitResult]
) -> list[Statement]:
    """How many times the training FLOPs one configuration needs to reach the accuracy of another.

    Every series of a non-reference arm is compared with every series of the reference arm ("ift" when
    present, else the first arm), and every arm pooled over sizes with the reference arm pooled over
    sizes (fits only). The accuracy compared is the middle of the range both curves cover within their
    measured FLOPs, so nothing is extrapolated. A series pair uses the fitted curves when both have one,
    else interpolation between measured points (the statement says which). Pairs that cannot be
    compared (too few FLOP levels, no common accuracy) give a statement with ``ok=False``.
    """
    out: list[Statement] = []
    arms = sorted({p.arm for p in points}, key=_arm_order)
    if len(arms) < 2:
        return out
    ref = "ift" if "ift" in arms else arms[0]
    groups = series(points)
    fit_of = {(f.model, f.arm, f.variant, f.metric): f for f in fits}
    for metric in metrics:
        refs = [(k, v) for k, v in groups.items() if k[1] == ref]
        tests = [(k, v) for k, v in groups.items() if k[1] != ref]
        for tk, tpts in tests:
            for rk, rpts in refs:
                out.append(_pair_statement(tpts, rpts, metric, fit_of.get((*tk, metric)), fit_of.get((*rk, metric))))
        for arm in arms:
            fa, fr = fit_of.get((None, arm, "", metric)), fit_of.get((None, ref, "", metric))
            if arm == ref or fa is None or fr is None:
                continue
            la, lr = f"{arm} (all sizes)", f"{ref} (all sizes)"
            if fa.fit is None or fr.fit is None:
                why = f"no fit for {la if fa.fit is None else lr}: {fa.reason if fa.fit is None else fr.reason}"
                out.append(_not_compared(metric, la, lr, why, "fit"))
                continue
            out.append(_fitted_statement(la, lr, metric, fa, fr))
    return out


def _not_compared(metric: str, la: str, lb: str, why: str, method: str) -> Statement:
    subject = f"{la} vs {lb}"
    return Statement("equal", metric, f"{subject} on {metric}: not compared, {why}", method, ok=False,
                     subject=subject, why=why)


def _fitted_statement(la: str, lb: str, metric: str, fa: FitResult, fb: FitResult) -> Statement:
    ranges = [tuple(float(v) for v in f.fit.predict([f.x_min, f.x_max])) for f in (fa, fb)]
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    level = 0.5 * (lo + hi)
    xa = fa.fit.flops_for(level) if hi > lo else None
    xb = fb.fit.flops_for(level) if hi > lo else None
    if xa is None or xb is None:
        return _not_compared(metric, la, lb, "their fitted curves reach no common accuracy within the measured FLOPs", "fit")
    text = (f"{_needs_text(la, lb, xa, xb)} for the same {metric} accuracy "
            f"({_pct(level)}: {_flops(xa)} vs {_flops(xb)} FLOPs; fitted curves)")
    return Statement("equal", metric, text, "fit")


def _pair_statement(
    tpts: list[Point], rpts: list[Point], metric: str, ft: FitResult | None, fr: FitResult | None
) -> Statement:
    lt, lr = tpts[0].label, rpts[0].label
    if ft is not None and fr is not None and ft.fit is not None and fr.fit is not None:
        return _fitted_statement(lt, lr, metric, ft, fr)
    envs = []
    for pts in (tpts, rpts):
        lx, env = _envelope(pts, metric)
        if len(lx) < 2:
            return _not_compared(metric, lt, lr, f"not enough points: {pts[0].label} has {len(lx)} FLOP "
                                 f"level{'s' if len(lx) != 1 else ''}, interpolation needs 2", "interpolation")
        envs.append(env)
    lo, hi = max(e[0] for e in envs), min(e[-1] for e in envs)
    if hi <= lo:
        return _not_compared(metric, lt, lr, "no common accuracy above both first budgets", "interpolation")
    level = 0.5 * (lo + hi)
    xt, xr = interpolated_flops_for(tpts, metric, level), interpolated_flops_for(rpts, metric, level)
    text = (f"{_needs_text(lt, lr, xt, xr)} for the same {metric} accuracy "
            f"({_pct(level)}: {_flops(xt)} vs {_flops(xr)} FLOPs; interpolated between measured points)")
    return Statement("equal", metric, text, "interpolation")


# ----------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------

AXES = (
    ("training", "train_flops", "training FLOPs"),
    ("inference", "inference_flops_per_query", "inference FLOPs per query"),
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_LINESTYLES = ("-", "--", "-.", ":")


def _log_limits(xs: Sequence[float]) -> tuple[float, float]:
    """x limits spanning at least one decade around the data, so log ticks stay readable."""
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    pad = max(0.1 * (hi - lo), 0.5 * max(0.0, 1.0 - (hi - lo)), 0.05)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "metric"


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
    against. Uses matplotlib's Agg canvas directly, so no display and no global backend switch is needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    groups = series(points)
    models = sorted({(p.model, p.variant) for p in points},
                    key=lambda mv: min(p.sort_key() for p in points if (p.model, p.variant) == mv))
    arms = sorted({p.arm for p in points}, key=_arm_order)
    cmap = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
    colour = {m: cmap[i % len(cmap)] for i, m in enumerate(models)}
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
                    means = _level_means(pts, metric)
                    if len(means) > 1:
                        ax.plot([m[0] for m in means], [100 * m[1] for m in means], color=c, linestyle=style[key[1]],
                                linewidth=1.2)
                    fr = fit_of.get((*key, metric))
                    if fr is not None and fr.fit is not None:
                        grid = np.geomspace(fr.x_min, fr.x_max, 100)
                        ax.plot(grid, 100 * fr.fit.predict(grid), color=c, linewidth=0.8, alpha=0.6)
            if axis == "training":
                for arm in arms:
                    fr = fit_of.get((None, arm, "", metric))
                    if fr is not None and fr.fit is not None:
                        grid = np.geomspace(fr.x_min, fr.x_max, 100)
                        ax.plot(grid, 100 * fr.fit.predict(grid), color="0.45", linestyle=style[arm], linewidth=1.0,
                                label=f"fit: {arm}, all sizes (MAE {100 * fr.fit.mae:.1f} pts)")
            front = pareto_front(usable, attr, metric, rtol=EQUAL_FLOPS_RTOL)
            fx = [getattr(p, attr) for p in front]
            fy = [100 * p.metric(metric) for p in front]
            ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1.0, label="Pareto frontier")
            ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", linewidths=1.2, zorder=5)
            chance = max((p.chance.get(metric, 0.0) for p in usable), default=0.0) if metric != OVERALL else 0.0
            if chance > 0:
                ax.axhline(100 * chance, color="0.6", linestyle=":", linewidth=1.0, label=f"chance ({_pct(chance)})")
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


# ----------------------------------------------------------------------------------------------------
# The markdown report
# ----------------------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _opt(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _section_run(study: Study, metrics: Sequence[str]) -> list[str]:
    pts = study.points
    lines = ["## What was run", ""]
    statuses: dict[str, int] = defaultdict(int)
    for st in study.run_status.values():
        statuses[st] += 1
    arm_status: dict[str, int] = defaultdict(int)
    for s in study.skipped:
        if s.arm is not None:
            arm_status[s.status if s.status != "complete" else "complete, not evaluated"] += 1
    run_counts = ", ".join(f"{n} {st}" for st, n in sorted(statuses.items()))
    arm_counts = ", ".join([f"{len(pts)} complete and evaluated"] + [f"{n} {st}" for st, n in sorted(arm_status.items())])
    lines.append(f"- Run folders (results.json files): {len(study.run_status)} ({run_counts}).")
    lines.append(f"- Arm results: {arm_counts}.")
    models = {}
    for p in pts:
        models.setdefault(p.model, p)
    lines.append("- Students: " + (", ".join(
        f"{p.model_name} ({p.params:,} parameters)" if p.params else p.model_name
        for p in sorted(models.values(), key=Point.sort_key)) or "none"))
    arms = sorted({p.arm for p in pts}, key=_arm_order)
    lines.append("- Arms: " + (", ".join(arms) or "none"))
    budgets = sorted({_budget_key(p.budget) for p in pts if p.budget is not None})
    lines.append("- FLOP budgets: " + (", ".join(_flops(b) for b in budgets) or "none (runs not trained to a FLOP budget)"))
    lines.append(f"- Metrics: {', '.join(metrics)}; accuracies are exact-match on each run's held-out set.")
    if study.skipped:
        lines += ["", "Arms and files that gave no point:", ""]
        lines.append(_table(["run", "model", "arm", "budget", "status", "reason"], [
            (_rel(s.source.parent, study.root), s.model or "-", s.arm or "-", _flops(s.budget), s.status, s.reason)
            for s in study.skipped]))
    return lines


def _section_results(study: Study, metrics: Sequence[str]) -> list[str]:
    rows = []
    for p in study.points:
        rows.append([p.model_name, f"{p.params:,}" if p.params else "-", p.arm + (f" ({p.variant})" if p.variant else ""),
                     _flops(p.budget), _flops(p.train_flops),
                     *[_pct(p.metric(m)) if p.metric(m) is not None else "-" for m in metrics],
                     _flops(p.inference_flops_per_query), _opt(p.mean_output_tokens, ".1f"),
                     _rel(p.source.parent, study.root)])
    chance = {}
    for p in study.points:
        for f, c in p.chance.items():
            chance.setdefault(f, c)
    lines = ["## Results", "", _table(
        ["model", "params", "arm", "budget", "training FLOPs", *metrics, "inference FLOPs/query", "output tokens", "run"],
        rows)]
    if chance:
        lines += ["", "Chance level: " + ", ".join(f"{f} {_pct(c)}" for f, c in sorted(chance.items())) + "."]
    return lines


def _section_pareto(study: Study, metrics: Sequence[str]) -> list[str]:
    lines = ["## Pareto frontiers", "",
             "Configurations no other configuration beats (less or equal FLOPs and higher accuracy), "
             f"by increasing FLOPs. FLOPs within {EQUAL_FLOPS_RTOL:.0%} of each other count as equal (runs trained "
             "to one budget stop within a step of it)."]
    for _axis, attr, label in AXES:
        lines += ["", f"### Accuracy against {label}", ""]
        rows = []
        for m in metrics:
            front = pareto_front(study.points, attr, m, rtol=EQUAL_FLOPS_RTOL)
            rows.append([m, " → ".join(f"{p.label} ({_flops(getattr(p, attr))}, {_pct(p.metric(m))})" for p in front)
                         or "no points"])
        lines.append(_table(["metric", "frontier"], rows))
    return lines


def _section_fits(fits: Sequence[FitResult], ceiling: float | Mapping[str, float]) -> list[str]:
    ceil_text = (f"{_pct(ceiling)} for every metric" if not isinstance(ceiling, Mapping)
                 else ", ".join(f"{m} {_pct(c)}" for m, c in sorted(ceiling.items())))
    lines = ["## Saturating fits", "",
             "f(x) = a + b (1 - exp(-g x^k)) of accuracy against training FLOPs x, minimising mean absolute "
             "error, with a > 0, b > 0, a + b <= ceiling, g > 0, 0 < k <= 1 (enforced by construction). "
             f"Ceiling (teacher accuracy): {ceil_text}. x is divided by x_ref (the smallest fitted FLOPs) for "
             "the optimiser; g below is per FLOP^k, i.e. g = g_scaled x_ref^-k. Fits need at least "
             f"{MIN_FIT_POINTS} points at {MIN_FIT_DISTINCT_X} or more FLOP levels (more than "
             f"{EQUAL_FLOPS_RTOL:.0%} apart); 'all sizes' pools "
             "every student of an arm, as the paper pools its five sizes. A curve fitted on exactly "
             f"{MIN_FIT_POINTS} points can pass through all of them, so a MAE near 0 there says little about the shape.", ""]
    done = [f for f in fits if f.fit is not None]
    if done:
        lines.append(_table(["curve", "metric", "points", "a", "b", "a + b", "k", "g", "x_ref", "MAE (points)"], [
            (f.label, f.metric, f.n, _pct(f.fit.a), _pct(f.fit.b), _pct(f.fit.a + f.fit.b), f"{f.fit.k:.3f}",
             f"{f.fit.g:.3e}", _flops(f.fit.x_ref), f"{100 * f.fit.mae:.2f}") for f in done]))
    else:
        lines.append("No curve had enough points for a fit.")
    missing: dict[str, list[str]] = defaultdict(list)
    for f in fits:
        if f.fit is None:
            missing[f"{f.label}: {f.reason}"].append(f.metric)
    if missing:
        lines += ["", "Not fitted (not enough points):", ""]
        lines += [f"- {what} ({', '.join(ms)})" for what, ms in missing.items()]
    return lines


def _section_statements(
    study: Study, budget: Sequence[Statement], equal: Sequence[Statement], metrics: Sequence[str]
) -> list[str]:
    lines = ["## Compute-equivalent statements", "",
             "Read off this study's own points only. Differences are in accuracy points.", "",
             "### At matched training budget", ""]
    if budget:
        for m in metrics:
            ss = [s for s in budget if s.metric == m]
            if ss:
                lines += [f"**{m}**", ""] + [f"- {s.text}" for s in ss] + [""]
    else:
        lines += ["No run was trained to a FLOP budget, so there is no matched-budget comparison.", ""]
    early = [p for p in study.points if p.budget is not None and not _spent_budget(p)]
    if early:
        lines += ["Left out of matched-budget comparisons, because they stopped before spending their budget:", ""]
        lines += [f"- {p.label} at {_flops(p.budget)}: {100 * p.budget_used:.1f}% spent (stopped by "
                  f"{p.stopped_by or 'unknown'})" for p in early] + [""]
    lines += ["### Training FLOPs for equal accuracy", ""]
    done = [s for s in equal if s.ok]
    if not equal:
        lines += ["Only one arm was run: nothing to compare.", ""]
    elif not done:
        lines += ["No pair could be compared (see below).", ""]
    for m in metrics:
        ss = [s for s in done if s.metric == m]
        if ss:
            lines += [f"**{m}**", ""] + [f"- {s.text}" for s in ss] + [""]
    skipped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for st in equal:
        if not st.ok:
            skipped[(st.subject, st.why)].append(st.metric)
    if skipped:
        lines += ["Not compared:", "", _table(["pair", "metrics", "why"], [
            (subject, "all" if len(ms) == len(metrics) else ", ".join(ms), why) for (subject, why), ms in skipped.items()
        ]), ""]
    return lines


def _pooled_tokens(pts: Sequence[Point]) -> tuple[float | None, float | None, float | None]:
    """Mean output tokens over all answers, right answers and wrong answers, weighted by their counts."""
    tot = right = wrong = 0.0
    n_tot = n_right = n_wrong = 0.0
    for p in pts:
        if p.mean_output_tokens is not None and p.n:
            tot += p.mean_output_tokens * p.n
            n_tot += p.n
        nr = round(p.accuracy * p.n)
        if p.mean_output_tokens_correct is not None and nr:
            right += p.mean_output_tokens_correct * nr
            n_right += nr
        if p.mean_output_tokens_wrong is not None and p.n - nr:
            wrong += p.mean_output_tokens_wrong * (p.n - nr)
            n_wrong += p.n - nr
    return (tot / n_tot if n_tot else None, right / n_right if n_right else None, wrong / n_wrong if n_wrong else None)


def _section_lengths(study: Study) -> list[str]:
    pts = study.points
    lines = ["## Output lengths", "", "Mean generated tokens per held-out query, and for right and wrong answers.", ""]
    rows = []
    for p in pts:
        r, w = p.mean_output_tokens_correct, p.mean_output_tokens_wrong
        rows.append([p.label, _flops(p.budget), _opt(p.mean_output_tokens, ".1f"), _opt(r, ".1f"), _opt(w, ".1f"),
                     f"{w / r:.2f}" if r and w is not None else "-", _flops(p.inference_flops_per_query)])
    headers = ["configuration", "budget", "all", "right", "wrong", "wrong / right", "inference FLOPs/query"]
    lines.append(_table(headers, rows))
    arms = sorted({p.arm for p in pts}, key=_arm_order)
    ref = "ift" if "ift" in arms else (arms[0] if arms else None)
    ref_tokens = {(p.model, p.variant, p.budget): p.mean_output_tokens for p in pts if p.arm == ref}
    rows = []
    for arm in arms:
        ap = [p for p in pts if p.arm == arm]
        allt, right, wrong = _pooled_tokens(ap)
        ratios = [p.mean_output_tokens / ref_tokens[(p.model, p.variant, p.budget)] for p in ap
                  if p.mean_output_tokens is not None and ref_tokens.get((p.model, p.variant, p.budget))]
        rows.append([arm, len(ap), _opt(allt, ".1f"), _opt(right, ".1f"), _opt(wrong, ".1f"),
                     f"{wrong / right:.2f}" if right and wrong is not None else "-",
                     f"{statistics.median(ratios):.2f} ({len(ratios)})" if ratios else "-"])
    lines += ["", "Per arm, pooled over its configurations (weighted by answers):", "",
              _table(["arm", "configurations", "all", "right", "wrong", "wrong / right",
                      f"x {ref} tokens, median (matched runs)"], rows)]
    return lines


def write_report(study_dir: str | Path, *, ceiling: float | Mapping[str, float] = 1.0) -> Path:
    """Collect the study, fit, compare, plot, and write ``STUDY_DIR/report/report.md``; returns its path.

    ``ceiling`` is the teacher's accuracy (the fit's bound on a + b): one number, or one per metric
    (``"overall"`` and every family). The PNGs go beside report.md and are linked relatively. Every file
    is written atomically; stale plots of an earlier report are removed.
    """
    study = scan(study_dir)
    out = study.root / REPORT_DIR
    metrics = study.metrics if study.points else [OVERALL]
    fits = fit_study(study.points, metrics, ceiling)
    budget = compare_at_budget(study.points, metrics)
    equal = equal_accuracy_statements(study.points, metrics, fits)
    plots = plot_study(study.points, metrics, fits, out)
    lines = [f"# Study report: {study.root.name}", "",
             f"Written by rdistill {__version__} from {len(study.run_status)} results.json file(s) under "
             f"`{study.root}`.", ""]
    lines += _section_run(study, metrics) + [""]
    if not study.points:
        lines += ["No complete, evaluated arm: nothing to compare yet.", ""]
    else:
        lines += _section_results(study, metrics) + [""]
        lines += _section_pareto(study, metrics) + [""]
        lines += _section_fits(fits, ceiling) + [""]
        lines += _section_statements(study, budget, equal, metrics)
        lines += _section_lengths(study) + [""]
        lines += ["## Plots", ""]
        for _axis, attr, label in AXES:
            for path in plots:
                if f"{PLOT_PREFIX}{_axis}_" in path.name:
                    lines += [f"![accuracy against {label}: {path.stem}]({path.name})", ""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path
