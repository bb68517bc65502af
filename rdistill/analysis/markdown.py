"""The study report: ``STUDY_DIR/report/report.md`` with its tables, statements and linked plots."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from rdistill import __version__
from rdistill.analysis._format import flops_text
from rdistill.analysis.fit import DEFAULT_RULES, PAPER_K_MAX, DegeneracyRules, check_k_max
from rdistill.analysis.fits import fit_study, resolve_ceilings
from rdistill.analysis.plots import AXES, PLOT_PREFIX, TOTAL_COST, plot_study
from rdistill.analysis.points import OVERALL, REPORT_DIR, Study, scan
from rdistill.analysis.resample import DEFAULT_BOOTSTRAP, DEFAULT_SEED, Resampler
from rdistill.analysis.sections import (
    section_checkpoints,
    section_fits,
    section_lengths,
    section_modes,
    section_pareto,
    section_replicates,
    section_results,
    section_run,
    table,
)
from rdistill.analysis.serving import (
    DEFAULT_QUERIES,
    BreakEven,
    break_even_at_accuracy,
    break_even_at_budget,
    frontier_statement,
)
from rdistill.analysis.statements import (
    ALPHA,
    Statement,
    compare_at_budget,
    count_comparisons,
    equal_accuracy_statements,
)
from rdistill.io import write_text_atomic


def _by_metric(statements: Sequence[Statement | BreakEven], metrics: Sequence[str]) -> list[str]:
    """Statements as bullet lists under a bold heading per metric, metrics with none left out."""
    lines: list[str] = []
    for m in metrics:
        ss = [s for s in statements if s.metric == m]
        if ss:
            lines += [f"**{m}**", ""] + [f"- {s.text}" for s in ss] + [""]
    return lines


def _section_statements(
    study: Study, budget: Sequence[Statement], equal: Sequence[Statement], metrics: Sequence[str], rs: Resampler
) -> list[str]:
    counts = count_comparisons([*budget, *equal])
    clear = sum(1 for s in budget if s.clear)
    lines = ["## Compute-equivalent statements", "",
             "Read off this study's own points only. Differences are in accuracy points, intervals are 95%. "
             f"This report makes **{counts['budget']} matched-budget comparisons** (every metric and budget) and "
             f"**{counts['equal']} compute-equivalent ratios**. Each comparison's p-value is Holm-adjusted over all "
             f"{counts['budget']}; a win is clear when the adjusted p-value is below {ALPHA:g} and the interval of "
             f"the difference excludes 0 ({clear} are). Bootstrap intervals use {rs.n} replicates (RNG seed "
             f"{rs.seed}) that resample the held-out items (and the seeds of replicated configurations); the "
             "ratios' intervals are per statement, not adjusted.", "",
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
        lines += ["Not compared:", "", table(["pair", "metrics", "why"], [
            (subject, "all" if len(ms) == len(metrics) else ", ".join(ms), why) for (subject, why), ms in skipped.items()
        ]), ""]
    return lines


def _section_serving(
    study: Study, metrics: Sequence[str], queries: Sequence[float], at_accuracy: Sequence[BreakEven],
    at_budget: Sequence[BreakEven],
) -> list[str]:
    lines = ["## The cost of serving", "",
             "Total cost = training FLOPs + Q x inference FLOPs per query, for Q queries served. A configuration "
             "that is cheaper to train but dearer to serve pays off only up to a break-even volume Q*; intervals "
             "are 95% bootstrap intervals (inference FLOPs per query taken as measured).", ""]
    for q in queries:
        lines += [f"### Frontier at Q = {flops_text(q)} queries", ""]
        lines += [f"- {frontier_statement(study.points, m, q)}" for m in metrics] + [""]
    lines += ["### Break-even at matched accuracy", "",
              "For each pair of series (a non-reference arm against the reference arm): the training FLOPs each "
              "needs for the accuracy both reach (their fits when not degenerate, else their measured points) and "
              "its inference FLOPs per query there.", ""]
    lines += _by_metric([b for b in at_accuracy if b.ok], metrics) or ["No pair reaches a common accuracy.", ""]
    lines += ["### Break-even at matched budget", "",
              "At each training budget, the most accurate configuration against the best of each other arm, which "
              "would need more training (interpolated along its measured points) to match it.", ""]
    lines += _by_metric([b for b in at_budget if b.ok], metrics) or ["No pair at a matched budget.", ""]
    missing = [b for b in (*at_accuracy, *at_budget) if not b.ok]
    if missing:
        lines += ["Not computed:", ""] + sorted({f"- {b.text}" for b in missing}) + [""]
    return lines


def write_report(
    study_dir: str | Path, *, ceiling: float | Mapping[str, float] = 1.0, x: str = "exact",
    queries: Sequence[float] | None = None, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED,
    rules: DegeneracyRules = DEFAULT_RULES, k_max: float = PAPER_K_MAX,
) -> Path:
    """Collect the study, fit, compare, plot, and write ``STUDY_DIR/report/report.md``; returns its path.

    ``ceiling`` is the teacher's accuracy (the fit's bound on a + b): one number, or one per metric
    (:func:`rdistill.analysis.fits.resolve_ceilings`). ``x`` is the training-FLOP count of the x-axis
    (exact, paper, 6nd, executed). ``queries`` are the serving volumes the total-cost frontier and plot
    are drawn for (default 1e3, 1e6, 1e9). ``bootstrap`` replicates with RNG seed ``seed`` give every
    interval, so a report is reproducible. ``rules`` say when a fit is degenerate; ``k_max`` bounds the
    fits' bend k (the paper's 1; more lets a curve take off more steeply, and the report says so). The
    PNGs go beside report.md and are linked relatively. Every file is written atomically; stale plots are removed.
    """
    check_k_max(k_max)
    study = scan(study_dir, x=x)
    out = study.root / REPORT_DIR
    metrics = study.metrics if (study.points or study.checkpoints) else [OVERALL]
    ceilings = resolve_ceilings(ceiling, metrics, study.points)
    qs = sorted({float(q) for q in (queries if queries else DEFAULT_QUERIES)})
    if any(not q >= 0 for q in qs):
        raise ValueError(f"query volumes must be 0 or more, got {qs}")
    fits = fit_study(study.points, metrics, ceilings, rules=rules, k_max=k_max)
    rs = Resampler(study.points, n=bootstrap, seed=seed)
    plots = plot_study(study.points, metrics, fits, out, queries=qs, checkpoints=study.checkpoints)
    lines = [f"# Study report: {study.root.name}", "",
             f"Written by rdistill {__version__} from {len(study.run_status)} results.json file(s) under "
             f"`{study.root}`.", ""]
    lines += section_run(study, metrics) + [""]
    checkpoints = section_checkpoints(study, metrics)
    if not study.points:
        lines += ["No complete, evaluated arm: nothing to compare yet.", ""]
        lines += checkpoints + ([""] if checkpoints else [])
    else:
        budget = compare_at_budget(study.points, metrics, resampler=rs)
        equal = equal_accuracy_statements(study.points, metrics, fits, resampler=rs)
        at_accuracy = break_even_at_accuracy(study.points, metrics, fits, rs)
        at_budget = break_even_at_budget(study.points, metrics, rs)
        lines += section_results(study, metrics) + [""]
        lines += checkpoints + ([""] if checkpoints else [])
        replicates = section_replicates(study, metrics, rs)
        lines += replicates + ([""] if replicates else [])
        lines += section_pareto(study, metrics) + [""]
        lines += section_fits(fits, ceilings, rules, k_max) + [""]
        lines += _section_statements(study, budget, equal, metrics, rs)
        lines += _section_serving(study, metrics, qs, at_accuracy, at_budget)
        lines += section_lengths(study) + [""]
        lines += section_modes(study, metrics) + [""]
    if plots:
        lines += ["## Plots", ""]
        labels = [(f"{a}_flops_", label) for a, _attr, label in AXES] + [(f"{TOTAL_COST}_", "total cost")]
        for key, label in labels:
            for path in plots:
                if path.name.startswith(f"{PLOT_PREFIX}{key}"):
                    lines += [f"![accuracy against {label}: {path.stem}]({path.name})", ""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path
