"""The study report: ``STUDY_DIR/report/report.md`` with its tables, statements and linked plots."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from rdistill import __version__
from rdistill.analysis._format import flops_text, pct
from rdistill.analysis.fit import MIN_FIT_DISTINCT_X, MIN_FIT_POINTS
from rdistill.analysis.fits import FitResult, fit_study
from rdistill.analysis.pareto import EQUAL_FLOPS_RTOL, pareto_front
from rdistill.analysis.plots import AXES, PLOT_PREFIX, plot_study
from rdistill.analysis.points import OVERALL, REPORT_DIR, Point, Study, arms_in, budget_key, reference_arm, scan
from rdistill.analysis.statements import Statement, compare_at_budget, equal_accuracy_statements
from rdistill.io import write_text_atomic


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
    lines.append("- Arms: " + (", ".join(arms_in(pts)) or "none"))
    budgets = sorted({budget_key(p.budget) for p in pts if p.budget is not None})
    lines.append("- FLOP budgets: " + (", ".join(flops_text(b) for b in budgets)
                                       or "none (runs not trained to a FLOP budget)"))
    lines.append(f"- Metrics: {', '.join(metrics)}; accuracies are exact-match on each run's held-out set.")
    if study.skipped:
        lines += ["", "Arms and files that gave no point:", ""]
        lines.append(_table(["run", "model", "arm", "budget", "status", "reason"], [
            (_rel(s.source.parent, study.root), s.model or "-", s.arm or "-", flops_text(s.budget), s.status, s.reason)
            for s in study.skipped]))
    return lines


def _section_results(study: Study, metrics: Sequence[str]) -> list[str]:
    rows = []
    for p in study.points:
        rows.append([p.model_name, f"{p.params:,}" if p.params else "-", p.arm + (f" ({p.variant})" if p.variant else ""),
                     flops_text(p.budget), flops_text(p.train_flops),
                     *[pct(p.metric(m)) if p.metric(m) is not None else "-" for m in metrics],
                     flops_text(p.inference_flops_per_query), _opt(p.mean_output_tokens, ".1f"),
                     _rel(p.source.parent, study.root)])
    chance = {}
    for p in study.points:
        for f, c in p.chance.items():
            chance.setdefault(f, c)
    lines = ["## Results", "", _table(
        ["model", "params", "arm", "budget", "training FLOPs", *metrics, "inference FLOPs/query", "output tokens", "run"],
        rows)]
    if chance:
        lines += ["", "Chance level: " + ", ".join(f"{f} {pct(c)}" for f, c in sorted(chance.items())) + "."]
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
            rows.append([m, " → ".join(f"{p.label} ({flops_text(getattr(p, attr))}, {pct(p.metric(m))})" for p in front)
                         or "no points"])
        lines.append(_table(["metric", "frontier"], rows))
    return lines


def _section_fits(fits: Sequence[FitResult], ceiling: float | Mapping[str, float]) -> list[str]:
    ceil_text = (f"{pct(ceiling)} for every metric" if not isinstance(ceiling, Mapping)
                 else ", ".join(f"{m} {pct(c)}" for m, c in sorted(ceiling.items())))
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
            (f.label, f.metric, f.n, pct(f.fit.a), pct(f.fit.b), pct(f.fit.a + f.fit.b), f"{f.fit.k:.3f}",
             f"{f.fit.g:.3e}", flops_text(f.fit.x_ref), f"{100 * f.fit.mae:.2f}") for f in done]))
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


def _by_metric(statements: Sequence[Statement], metrics: Sequence[str]) -> list[str]:
    """Statements as bullet lists under a bold heading per metric, metrics with none left out."""
    lines: list[str] = []
    for m in metrics:
        ss = [s for s in statements if s.metric == m]
        if ss:
            lines += [f"**{m}**", ""] + [f"- {s.text}" for s in ss] + [""]
    return lines


def _section_statements(
    study: Study, budget: Sequence[Statement], equal: Sequence[Statement], metrics: Sequence[str]
) -> list[str]:
    lines = ["## Compute-equivalent statements", "",
             "Read off this study's own points only. Differences are in accuracy points.", "",
             "### At matched training budget", ""]
    if budget:
        lines += _by_metric(budget, metrics)
    else:
        lines += ["No run was trained to a FLOP budget, so there is no matched-budget comparison.", ""]
    early = [p for p in study.points if p.budget is not None and not p.spent_budget]
    if early:
        lines += ["Left out of matched-budget comparisons, because they stopped before spending their budget:", ""]
        lines += [f"- {p.label} at {flops_text(p.budget)}: {100 * p.budget_used:.1f}% spent (stopped by "
                  f"{p.stopped_by or 'unknown'})" for p in early] + [""]
    lines += ["### Training FLOPs for equal accuracy", ""]
    done = [s for s in equal if s.ok]
    if not equal:
        lines += ["Only one arm was run: nothing to compare.", ""]
    elif not done:
        lines += ["No pair could be compared (see below).", ""]
    lines += _by_metric(done, metrics)
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


def _wrong_over_right(right: float | None, wrong: float | None) -> str:
    return f"{wrong / right:.2f}" if right and wrong is not None else "-"


def _section_lengths(study: Study) -> list[str]:
    pts = study.points
    lines = ["## Output lengths", "", "Mean generated tokens per held-out query, and for right and wrong answers.", ""]
    rows = []
    for p in pts:
        r, w = p.mean_output_tokens_correct, p.mean_output_tokens_wrong
        rows.append([p.label, flops_text(p.budget), _opt(p.mean_output_tokens, ".1f"), _opt(r, ".1f"), _opt(w, ".1f"),
                     _wrong_over_right(r, w), flops_text(p.inference_flops_per_query)])
    headers = ["configuration", "budget", "all", "right", "wrong", "wrong / right", "inference FLOPs/query"]
    lines.append(_table(headers, rows))
    arms = arms_in(pts)
    ref = reference_arm(arms)
    ref_tokens = {(p.model, p.variant, p.budget): p.mean_output_tokens for p in pts if p.arm == ref}
    rows = []
    for arm in arms:
        ap = [p for p in pts if p.arm == arm]
        allt, right, wrong = _pooled_tokens(ap)
        ratios = [p.mean_output_tokens / ref_tokens[(p.model, p.variant, p.budget)] for p in ap
                  if p.mean_output_tokens is not None and ref_tokens.get((p.model, p.variant, p.budget))]
        rows.append([arm, len(ap), _opt(allt, ".1f"), _opt(right, ".1f"), _opt(wrong, ".1f"),
                     _wrong_over_right(right, wrong),
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
        for axis, _attr, label in AXES:
            for path in plots:
                if f"{PLOT_PREFIX}{axis}_" in path.name:
                    lines += [f"![accuracy against {label}: {path.stem}]({path.name})", ""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path
