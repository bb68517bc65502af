"""The report's descriptive sections: what was run, the results with their intervals, replicates pooled,
Pareto frontiers, fits (degenerate ones marked) and output lengths. :mod:`.markdown` adds the
statements and the serving cost and writes the file."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from rdistill.analysis._format import flops_text, pct
from rdistill.analysis.fit import (
    DEFAULT_RULES,
    MIN_FIT_DISTINCT_X,
    MIN_FIT_POINTS,
    N_PARAMETERS,
    PAPER_K_MAX,
    DegeneracyRules,
    k_at_bound,
)
from rdistill.analysis.fits import FitResult
from rdistill.analysis.pareto import EQUAL_FLOPS_RTOL, pareto_front
from rdistill.analysis.plots import AXES
from rdistill.analysis.points import X_LABELS, Point, Study, arms_in, budget_key, reference_arm
from rdistill.analysis.resample import Resampler, configurations
from rdistill.analysis.stats import wilson_interval


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _opt(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _interval(lo: float, hi: float) -> str:
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def section_run(study: Study, metrics: Sequence[str]) -> list[str]:
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
    lines.append(f"- Run folders (results.json files): {len(study.run_status)}"
                 + (f" ({run_counts})." if run_counts else "."))
    lines.append(f"- Arm results: {arm_counts}.")
    if study.checkpoints:
        lines.append(f"- Checkpoints evaluated without training FLOPs on record (eval.json): {len(study.checkpoints)}.")
    models = {}
    for p in pts:
        models.setdefault(p.model, p)
    lines.append("- Students: " + (", ".join(
        f"{p.model_name} ({p.params:,} parameters)" if p.params else p.model_name
        for p in sorted(models.values(), key=Point.sort_key)) or "none"))
    lines.append("- Arms: " + (", ".join(arms_in(pts)) or "none"))
    budgets = sorted({budget_key(p.budget) for p in pts if p.budget is not None})
    lines.append("- FLOP budgets: " + (", ".join(flops_text(b) for b in budgets)
                                       or "none (runs not trained to a FLOP budget)"))
    seeds = sorted({p.seed for p in pts if p.seed is not None})
    lines.append(f"- Seeds: {', '.join(map(str, seeds)) or 'not recorded'}; runs that differ only by seed are "
                 "replicates of one configuration.")
    lines.append(f"- Training FLOPs axis: {X_LABELS.get(study.x_count, study.x_count)} (`--x {study.x_count}`).")
    with_items = sum(p.items is not None for p in pts)
    lines.append(f"- Per-item scores (generations.jsonl): {with_items} of {len(pts)} points; comparisons between "
                 "points that have them are paired over the items both were scored on.")
    lines.append(f"- Metrics: {', '.join(metrics)}; accuracies are exact-match on each run's held-out set.")
    if study.grid:
        order = {s: i for i, s in enumerate(("complete", "running", "interrupted", "crashed", "failed", "missing"))}
        counts = ", ".join(f"{n} {st}" for st, n in sorted(study.grid.items(), key=lambda kv: order.get(kv[0], 9)))
        pending = sum(study.grid.values()) - study.grid.get("complete", 0)
        lines.append("- Grid points dispatched into the study (recorded in grids/ and sweep.json; delete a grid's "
                     f"record to drop it): {sum(study.grid.values())} "
                     f"({counts})." + (f" Those not complete ({pending}) are listed below with their folders and "
                                       "are in no fit; run `rdistill report` again as they arrive." if pending else ""))
    for note in study.grid_notes:
        lines.append(f"- Grid record not read: {note}.")
    if study.skipped:
        lines += ["", "Arms, grid points and files that gave no point:", ""]
        lines.append(table(["run", "model", "arm", "budget", "status", "reason"], [
            (rel(s.source.parent, study.root), s.model or "-", s.arm or "-", flops_text(s.budget), s.status, s.reason)
            for s in study.skipped]))
    if study.notes:
        lines += ["", "Per-item files not used:", ""] + [f"- {n}" for n in study.notes]
    return lines


def _acc_cell(p: Point, metric: str) -> str:
    acc = p.metric(metric)
    if acc is None:
        return "-"
    n = p.metric_n(metric)
    return f"{pct(acc)} {_interval(*wilson_interval(acc * n, n))}" if n else pct(acc)


def section_results(study: Study, metrics: Sequence[str]) -> list[str]:
    rows = []
    for p in study.points:
        rows.append([p.model_name, f"{p.params:,}" if p.params else "-", p.arm + (f" ({p.variant})" if p.variant else ""),
                     "-" if p.seed is None else p.seed, flops_text(p.budget), flops_text(p.train_flops),
                     _opt(p.epochs, ".2f"), *[_acc_cell(p, m) for m in metrics],
                     flops_text(p.inference_flops_per_query), _opt(p.mean_output_tokens, ".1f"),
                     rel(p.source.parent, study.root)])
    chance = {}
    for p in study.points:
        for f, c in p.chance.items():
            chance.setdefault(f, c)
    lines = ["## Results", "",
             "Accuracy with its 95% Wilson interval in brackets (in points; never of zero width, also at 0% and "
             "100%). Epochs: passes over the training examples.", "", table(
                 ["model", "params", "arm", "seed", "budget", f"training FLOPs ({study.x_count})", "epochs", *metrics,
                  "inference FLOPs/query", "output tokens", "run"], rows)]
    if chance:
        lines += ["", "Chance level: " + ", ".join(f"{f} {pct(c)}" for f, c in sorted(chance.items())) + "."]
    return lines


def section_checkpoints(study: Study, metrics: Sequence[str]) -> list[str]:
    """Checkpoints evaluated by ``rdistill eval`` with no training FLOPs on record: not fitted, not in
    the training-axis frontier or the statements; on the inference-FLOPs plots as black stars."""
    if not study.checkpoints:
        return []
    rows = [[p.label, f"{p.params:,}" if p.params else "-", p.n, *[_acc_cell(p, m) for m in metrics],
             flops_text(p.inference_flops_per_query), _opt(p.mean_output_tokens, ".1f"), rel(p.source.parent, study.root)]
            for p in study.checkpoints]
    return ["## Checkpoints without training FLOPs", "",
            "Evaluated with `rdistill eval`; their training cost is not on record, so they are placed on the "
            "inference-FLOPs axis only (the study's arms are compared with them there, by eye; no fit or "
            "statement uses them). Accuracy with its 95% Wilson interval.", "",
            table(["checkpoint", "params", "n", *metrics, "inference FLOPs/query", "output tokens", "folder"], rows)]


def section_replicates(study: Study, metrics: Sequence[str], rs: Resampler) -> list[str]:
    """Configurations with more than one run: mean accuracy and its interval over items and seeds."""
    groups = [c for c in configurations(study.points, metrics[0]) if len(c.points) > 1]
    if not groups:
        return []
    rows = []
    for c in groups:
        cells = []
        for m in metrics:
            if all(p.metric(m) is not None for p in c.points):
                cells.append(f"{pct(c.accuracy(m))} {_interval(*rs.config_interval(c, m))}")
            else:
                cells.append("-")
        rows.append([c.first.label, flops_text(c.first.budget), len(c.points),
                     ", ".join(str(p.seed) for p in c.points), *cells])
    return ["## Replicates", "",
            "Configurations run with more than one seed: the mean accuracy over the runs, with a 95% interval that "
            f"is the wider of the Wilson interval on the distinct held-out items and a bootstrap over items and "
            f"seeds ({rs.n} replicates). Replicates on the same items do not add to the sample size.", "",
            table(["configuration", "budget", "runs", "seeds", *metrics], rows)]


def section_pareto(study: Study, metrics: Sequence[str]) -> list[str]:
    lines = ["## Pareto frontiers", "",
             "Configurations no other configuration beats (less or equal FLOPs and higher accuracy), "
             f"by increasing FLOPs. FLOPs within {EQUAL_FLOPS_RTOL:.0%} of each other count as equal (runs trained "
             "to one budget stop within a step of it)."]
    for _axis, attr, label in AXES:
        lines += ["", f"### Accuracy against {label}", ""]
        rows = []
        for m in metrics:
            front = pareto_front(study.points, attr, m, rtol=EQUAL_FLOPS_RTOL)
            rows.append([m, " → ".join(f"{p.label} ({flops_text(getattr(p, attr))}, {pct(p.metric(m))})" for p in front)
                         or "no points"])
        lines.append(table(["metric", "frontier"], rows))
    return lines


def section_fits(
    fits: Sequence[FitResult], ceilings: Mapping[str, float], rules: DegeneracyRules = DEFAULT_RULES,
    k_max: float = PAPER_K_MAX,
) -> list[str]:
    values = set(ceilings.values())
    ceil_text = (f"{pct(next(iter(values)))} for every metric" if len(values) == 1
                 else ", ".join(f"{m} {pct(c)}" for m, c in ceilings.items()))
    lines = ["## Saturating fits", "",
             "f(x) = a + b (1 - exp(-g x^k)) of accuracy against training FLOPs x, minimising mean absolute "
             f"error, with a > 0, b > 0, a + b <= ceiling, g > 0, 0 < k <= {k_max:g} (enforced by construction"
             + (")" if k_max == PAPER_K_MAX else
                f"; the paper bounds k by {PAPER_K_MAX:g}, this report by {k_max:g} (`--k-max`): with k above 1 a "
                "curve can take off in an S shape against log FLOPs, more steeply than the paper's form allows, "
                "as a small student does when it learns a task in one go)") + ". "
             f"Ceiling (teacher accuracy): {ceil_text}. x is divided by x_ref (the smallest fitted FLOPs) for "
             "the optimiser; g below is per FLOP^k, i.e. g = g_scaled x_ref^-k. Fits need at least "
             f"{MIN_FIT_POINTS} points at {MIN_FIT_DISTINCT_X} or more FLOP levels (more than "
             f"{EQUAL_FLOPS_RTOL:.0%} apart); 'all sizes' pools every student of an arm, as the paper pools its "
             "five sizes.", "",
             f"A fit is **degenerate** when it has no more points, or distinct FLOP levels, than its {N_PARAMETERS} "
             "parameters, when a shape "
             f"parameter sits at a bound of its range (k >= {rules.k_max * k_max:g} or <= {rules.k_min:g}, or g at the "
             "end of the optimiser's range"
             + ("; a or a + b within " + f"{rules.bound_tol:.1%} of the ceiling of 0 or of the ceiling"
                if rules.strict_bounds else "") +
             f"), when its rise b is below {100 * rules.min_rise:g} points (a flat line), or when its MAE is below "
             f"{100 * rules.min_mae:g} points (it passes through every point). Degenerate fits are listed and drawn "
             "dotted, but no compute-equivalent statement is read off them."
             + ("" if rules.strict_bounds else " a at 0 or a + b at the ceiling is noted: it fixes where the curve "
                "starts below or levels off above the measured FLOPs, not its shape within them."), ""]
    done = [f for f in fits if f.fit is not None]
    if done:
        lines.append(table(["curve", "metric", "points", "a", "b", "a + b", "k", "g", "x_ref", "MAE (points)",
                            "degenerate"], [
            (f.label, f.metric, f.n, pct(f.fit.a), pct(f.fit.b), pct(f.fit.a + f.fit.b), f"{f.fit.k:.3f}",
             f"{f.fit.g:.3e}", flops_text(f.fit.x_ref), f"{100 * f.fit.mae:.2f}",
             "; ".join(f.degenerate) if f.degenerate else "no" + (f" ({'; '.join(f.notes)})" if f.notes else ""))
            for f in done]))
        bad = sum(1 for f in done if f.degenerate)
        lines += ["", f"{len(done)} fits, {bad} of them degenerate."]
        pinned = sum(1 for f in done if k_at_bound(f.fit, rules))
        if pinned and k_max == PAPER_K_MAX:
            lines[-1] += (f" {pinned} have k at the paper's bound 1: their curves rise more steeply than its form "
                          "allows (10% to 90% of the rise within less than a 22-fold range of FLOPs); "
                          "`rdistill report --k-max 5` fits them with a larger bound and says so.")
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


def _wrong_over_right(right: float | None, wrong: float | None) -> str:
    return f"{wrong / right:.2f}" if right and wrong is not None else "-"


def section_lengths(study: Study) -> list[str]:
    pts = study.points
    lines = ["## Output lengths", "", "Mean generated tokens per held-out query, and for right and wrong answers.", ""]
    rows = []
    for p in pts:
        r, w = p.mean_output_tokens_correct, p.mean_output_tokens_wrong
        rows.append([p.label, flops_text(p.budget), _opt(p.mean_output_tokens, ".1f"), _opt(r, ".1f"), _opt(w, ".1f"),
                     _wrong_over_right(r, w), flops_text(p.inference_flops_per_query)])
    headers = ["configuration", "budget", "all", "right", "wrong", "wrong / right", "inference FLOPs/query"]
    lines.append(table(headers, rows))
    arms = arms_in(pts)
    ref = reference_arm(arms)
    ref_tokens = {(p.model, p.variant, p.budget, p.seed): p.mean_output_tokens for p in pts if p.arm == ref}
    rows = []
    for arm in arms:
        ap = [p for p in pts if p.arm == arm]
        allt, right, wrong = _pooled_tokens(ap)
        ratios = [p.mean_output_tokens / ref_tokens[(p.model, p.variant, p.budget, p.seed)] for p in ap
                  if p.mean_output_tokens is not None and ref_tokens.get((p.model, p.variant, p.budget, p.seed))]
        rows.append([arm, len(ap), _opt(allt, ".1f"), _opt(right, ".1f"), _opt(wrong, ".1f"),
                     _wrong_over_right(right, wrong),
                     f"{statistics.median(ratios):.2f} ({len(ratios)})" if ratios else "-"])
    lines += ["", "Per arm, pooled over its configurations (weighted by answers):", "",
              table(["arm", "configurations", "all", "right", "wrong", "wrong / right",
                     f"x {ref} tokens, median (matched runs)"], rows)]
    return lines


def section_modes(study: Study, metrics: Sequence[str]) -> list[str]:
    """Which mode each configuration answers in (the paper's mode switching: mixed curricula above 50%
    reasoning answer in reasoning mode), and how many outputs had no answer or were cut short."""
    pts = [p for p in study.points if p.reasoning_mode]
    if not pts:
        return []
    rows = [[p.label, flops_text(p.budget), *(_opt(p.reasoning_mode.get(m), ".0%") for m in metrics),
             _opt(p.no_answer, "d"), _opt(p.truncated, "d"), p.n] for p in pts]
    return ["## Output mode", "",
            "Share of held-out outputs in reasoning mode (they open a `<think>` block; the answer is read after "
            "`</think>`), and outputs with no answer (no box, or a think block never closed) or truncated (a think "
            "block never closed, or the token cap reached).", "",
            table(["configuration", "budget", *(f"reasoning mode {m}" for m in metrics), "no answer", "truncated",
                   "outputs"], rows)]
