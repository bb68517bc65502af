"""Study analysis: collect every run of a study, find Pareto frontiers, fit the paper's curves, plot, report.

A study folder holds run folders, each with the ``results.json`` that ``rdistill.run`` writes (read
only through ``rdistill.results.RunResults``). Every evaluated arm of every run is one :class:`Point`:
a student (model preset or local checkpoint) trained on one supervision format (arm) to one FLOP
budget, with its training FLOPs, inference FLOPs per query, accuracy (overall and per task family)
and output lengths.

What the report answers is the paper's question at equal compute:

- Pareto frontiers of accuracy against training FLOPs and against inference FLOPs per query (minimise
  FLOPs, maximise accuracy), overall and per task family (:mod:`.pareto`);
- the paper's saturating fit ``f(x) = a + b (1 - exp(-g x^k))`` with ``a, b > 0``, ``a + b <= ceiling``
  (the teacher's accuracy), ``g > 0``, ``0 < k <= 1``, minimising mean absolute error (:mod:`.fit`),
  per student and arm when it has enough budgets, and per arm pooled over student sizes, as the paper
  pools sizes (:mod:`.fits`);
- compute-equivalent statements read off the study's own points: who wins at each matched budget and
  by how much (with the sampling error of the difference), and how many times the training FLOPs one
  configuration needs to reach the accuracy another reaches (:mod:`.statements`);
- output-length tables, wrong answers against right ones, plots and the markdown report
  (:mod:`.plots`, :mod:`.markdown`).

Everything is computed from the results files; nothing is assumed about the data. The built-in
synthetic teacher is always right, so the default ceiling is 1.0; pass the teacher's accuracy (per
family if known) for other data.

Modules, each importing only those listed before it: ``points`` (reading a study), ``pareto``
(frontiers, FLOP levels), ``series`` (curves of points), ``fit`` (the curve fit itself), ``fits``
(fits over a study), ``statements``, ``plots``, ``markdown``.
"""

from rdistill.analysis.fit import Fit, fit_problem, fit_saturating
from rdistill.analysis.fits import FitResult, fit_study
from rdistill.analysis.markdown import write_report
from rdistill.analysis.pareto import flop_levels, pareto_front
from rdistill.analysis.points import Point, Skipped, Study, StudyError, collect, scan
from rdistill.analysis.statements import (
    Statement,
    compare_at_budget,
    equal_accuracy_statements,
    interpolated_flops_for,
)

__all__ = [
    "Fit",
    "FitResult",
    "Point",
    "Skipped",
    "Statement",
    "Study",
    "StudyError",
    "collect",
    "compare_at_budget",
    "equal_accuracy_statements",
    "fit_problem",
    "fit_saturating",
    "fit_study",
    "flop_levels",
    "interpolated_flops_for",
    "pareto_front",
    "scan",
    "write_report",
]
