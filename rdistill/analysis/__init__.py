"""Study analysis: collect every run of a study, find Pareto frontiers, fit the paper's curves, put an
uncertainty on every comparison, price serving, plot, report.

A study folder holds run folders, each with the ``results.json`` that ``rdistill.run`` writes (read
only through ``rdistill.results.RunResults``) and, per arm, the ``generations.jsonl`` of its held-out
outputs. Every evaluated arm of every run is one :class:`Point`: a student (model preset or local
checkpoint) trained on one supervision format (arm) to one FLOP budget with one seed, with its
training FLOPs (by the count chosen as the x-axis: exact, the paper's formula or 6ND), inference FLOPs
per query, accuracy (overall and per task family), epochs, output lengths and, when the generations
are there, which held-out items it got right (:mod:`.items`). Runs that differ only by seed are
replicates of one configuration.

What the report answers is the paper's question at equal compute, with its uncertainty:

- every accuracy with its Wilson interval; replicates averaged, not counted as more items (:mod:`.stats`);
- Pareto frontiers of accuracy against training FLOPs and against inference FLOPs per query (minimise
  FLOPs, maximise accuracy), overall and per task family (:mod:`.pareto`);
- the paper's saturating fit ``f(x) = a + b (1 - exp(-g x^k))`` with ``a, b > 0``, ``a + b <= ceiling``
  (the teacher's accuracy, one per family if known), ``g > 0``, ``0 < k <= 1`` (or a larger
  bound on k, said in the report, for curves that take off more steeply), minimising mean absolute
  error (:mod:`.fit`), per student and arm when it has enough budgets, and per arm pooled over student
  sizes, as the paper pools sizes (:mod:`.fits`); a fit with a shape parameter (k, g) at a bound, a
  rise b below a threshold, no more points or FLOP levels than parameters, or a MAE of about 0 is
  marked degenerate (a at 0 or a + b at the ceiling is noted);
- compute-equivalent statements read off the study's own points (:mod:`.statements`): who wins at
  each matched budget, by a paired comparison over the items both arms were scored on (and over
  seeds), with a 95% interval and a p-value Holm-adjusted over the comparisons the report makes; and
  how many times the training FLOPs one configuration needs to reach the accuracy another reaches, with
  a bootstrap interval (items resampled, curves refitted, :mod:`.resample`, :mod:`.refit`,
  :mod:`.curves`), never from a degenerate fit;
- the cost of serving (:mod:`.serving`): total cost = training FLOPs + Q x inference FLOPs per query,
  the break-even volume Q* of each pair of arms at matched accuracy and at matched budget, and the
  total-cost frontier for chosen volumes;
- output-length tables, wrong answers against right ones, plots and the markdown report
  (:mod:`.plots`, :mod:`.sections`, :mod:`.markdown`).

Everything is computed from the results files; nothing is assumed about the data. The built-in
synthetic teacher is always right, so the default ceiling is 1.0; pass the teacher's accuracy (per
family if known) for other data. Bootstraps use a fixed RNG seed, so a report is reproducible.

Modules, each importing only those listed before it: ``stats`` (intervals and tests on numbers),
``items`` (per-item scores), ``points`` (reading a study), ``pareto`` (frontiers, FLOP levels),
``series`` (curves of points), ``fit`` (the curve fit itself, degeneracy), ``refit`` (bootstrap refits),
``fits`` (fits over a study, ceilings), ``resample`` (bootstrap draws, paired differences), ``curves``
(FLOPs for an accuracy, with replicates), ``statements``, ``serving``, ``plots``, ``sections``,
``markdown``.
"""

from rdistill.analysis.fit import DegeneracyRules, Fit, degenerate_reasons, fit_problem, fit_saturating
from rdistill.analysis.fits import FitResult, fit_study, parse_ceiling, resolve_ceilings
from rdistill.analysis.items import ItemScores, read_items
from rdistill.analysis.markdown import write_report
from rdistill.analysis.pareto import flop_levels, pareto_front
from rdistill.analysis.points import X_COUNTS, Point, Skipped, Study, StudyError, collect, scan
from rdistill.analysis.resample import Resampler, configurations
from rdistill.analysis.serving import (
    BreakEven,
    break_even_at_accuracy,
    break_even_at_budget,
    serving_frontier,
    total_cost,
)
from rdistill.analysis.statements import (
    Statement,
    compare_at_budget,
    equal_accuracy_statements,
    interpolated_flops_for,
)
from rdistill.analysis.stats import (
    break_even,
    holm,
    mcnemar_exact,
    paired_difference_interval,
    wilson_interval,
)

__all__ = [
    "X_COUNTS",
    "BreakEven",
    "DegeneracyRules",
    "Fit",
    "FitResult",
    "ItemScores",
    "Point",
    "Resampler",
    "Skipped",
    "Statement",
    "Study",
    "StudyError",
    "break_even",
    "break_even_at_accuracy",
    "break_even_at_budget",
    "collect",
    "compare_at_budget",
    "configurations",
    "degenerate_reasons",
    "equal_accuracy_statements",
    "fit_problem",
    "fit_saturating",
    "fit_study",
    "flop_levels",
    "holm",
    "interpolated_flops_for",
    "mcnemar_exact",
    "paired_difference_interval",
    "pareto_front",
    "parse_ceiling",
    "read_items",
    "resolve_ceilings",
    "scan",
    "serving_frontier",
    "total_cost",
    "wilson_interval",
    "write_report",
]
