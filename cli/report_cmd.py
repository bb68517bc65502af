"""`rdistill report`: the markdown report of a study, with its plots, intervals and serving cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from rdistill.cli.app import app, fail
from rdistill.cli.render import console

XAxis = Literal["exact", "paper", "6nd", "executed"]


def parse_queries(text: str) -> list[float]:
    """``"1e6"`` or ``"1e3,1e6"`` -> query volumes; ValueError naming the bad one."""
    out = []
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
        try:
            q = float(part)
        except ValueError:
            raise ValueError(f"--queries: {part!r} is not a number of queries") from None
        if not q >= 0 or q == float("inf"):
            raise ValueError(f"--queries: a query volume is a finite number, 0 or more, got {part}")
        out.append(q)
    if not out:
        raise ValueError("--queries is empty; give one volume (1e6) or several (1e3,1e6,1e9)")
    return out


@app.command()
def report(
    study: Annotated[Path, typer.Argument(help="A study folder (run folders with results.json, found recursively).")],
    ceiling: Annotated[str, typer.Option(
        help="Teacher accuracy bounding the fits: one number for every metric (1.0 for the built-in data), or per "
             "metric, e.g. math-oe=0.921,general-mc=0.954 (a bare number among them is the default for the rest; "
             "overall, if not named, is the families' ceilings weighted by their held-out items).")] = "1.0",
    x: Annotated[XAxis, typer.Option(
        "--x", help="Training-FLOP count of the x-axis: exact (what the kernels do usefully), paper (its formula), "
                    "6nd, or executed (with recomputation and padding).")] = "exact",
    queries: Annotated[Optional[str], typer.Option(
        help="Serving volumes Q for total cost = training + Q x inference FLOPs: the report states the frontier "
             "at each and plots accuracy against total cost. Default: 1e3,1e6,1e9.")] = None,
    bootstrap: Annotated[int, typer.Option(
        help="Bootstrap replicates behind every interval (items and seeds resampled, fits redone).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap's random draws (the same seed, the same report).")] = 0,
    k_max: Annotated[float, typer.Option(
        help="Bound on the fits' bend k: the paper's 1, or more to let a curve take off more steeply than the "
             "paper's form allows (an S shape against log FLOPs; the report says which bound it used).")] = 1.0,
) -> None:
    """Write STUDY/report/report.md and its PNG plots: intervals, paired comparisons, fits (degenerate ones
    marked), compute-equivalent ratios and the break-even query volumes of serving."""
    from rdistill.analysis import StudyError, parse_ceiling, write_report

    try:
        ceilings = parse_ceiling(ceiling)
        volumes = parse_queries(queries) if queries is not None else None
        if bootstrap < 10:
            raise ValueError(f"--bootstrap must be at least 10, got {bootstrap}")
        path = write_report(study, ceiling=ceilings, x=x, queries=volumes, bootstrap=bootstrap, seed=seed, k_max=k_max)
    except (StudyError, ValueError) as e:
        fail(e)
    console.print(f"report: {path}")
