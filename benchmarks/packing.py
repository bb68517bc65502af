"""Packing speed and density: rdistill's C++ packer, its numpy twin, and TRL's best-fit decreasing.

The library's two named length distributions (``rdistill.flops.distributions``, the ones the FLOP
audit counts), drawn once with a fixed seed:

- ``ift-like``: lognormal with median 300 tokens (sigma 0.8), clipped to 16..4,096;
- ``reasoning-like``: lognormal with median 3,000 tokens (sigma 0.9), clipped to 64..32,768 (a tail to
  32k; at capacity 16,384 some documents are longer and are truncated).

Each is packed at capacities 16,384 and 32,768 with mode ``bfd`` and ``overflow="truncate"`` (what
TRL's ``strategy="bfd"`` does with long documents). What each timing includes:

- ``cpp index`` / ``numpy index``: ``rdistill.data.packing.pack_arrays`` with that backend, from a numpy
  array of lengths to the plan as arrays (documents in placement order + pack offsets), including
  input checks and the overflow policy;
- ``cpp lists``: ``rdistill.data.packing.pack``, the same plus one Python list of document indices per
  pack (what the trainer gets);
- ``cpp rows``: ``cpp index`` plus materialising the packed token rows as an Arrow list column
  (each document's tokens copied once, in packed order, with numpy; one offset per pack): the same
  output TRL produces;
- ``trl bfd``: ``trl.data_utils.pack_dataset(dataset, capacity, strategy="bfd")`` on a
  ``datasets.Dataset`` holding an ``input_ids`` list column (int32 token ids) of those lengths: its
  ``map`` over batches of 1,000 rows (the ``datasets`` default), sorting, the BFD loop and
  materialising the packed rows. Building the dataset is not timed. ``trl bfd global`` passes
  ``map_kwargs={"batch_size": n}`` so that it packs all rows at once (denser, slower).

Ours run at 1,000,000 documents, and all of them at the first 100,000 documents of the same lengths
(TRL needs the token arrays, which for a million reasoning-length rows do not fit in memory). Each
figure is the median of ``--repeats`` runs. Efficiency is real tokens / (packs x capacity).

Writes a row per measurement to ``OUT_DIR/packing.csv`` (appended; date, versions, machine: see
``benchmarks/_common.py``; load average) and the latest run as a markdown table to
``OUT_DIR/packing.md`` (``OUT_DIR`` is benchmarks/results unless ``--out-dir`` says otherwise).

    .venv/bin/python -m benchmarks.packing              # needs `pip install trl` for the TRL rows
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks._common import RESULTS, CsvLog, describe, environment, markdown_table
from rdistill.data import packing
from rdistill.flops.distributions import DISTRIBUTIONS

CAPACITIES = (16_384, 32_768)
VERSION_PACKAGES = ("numpy", "pyarrow", "trl", "datasets")
FIELDS = [
    "backend", "load_before", "load_after", "peak_rss", "distribution", "capacity", "docs", "packer",
    "seconds_median", "seconds_all", "efficiency", "packs", "includes",
]
"""This benchmark's columns, after the environment's (``benchmarks._common.environment``)."""
INCLUDES = {
    "cpp index": "pack_arrays(backend='cpp'): lengths -> documents in placement order + pack offsets",
    "numpy index": "pack_arrays(backend='numpy'): the same, numpy twin",
    "cpp lists": "pack(backend='cpp'): the index plus a Python list of document indices per pack",
    "cpp rows": "cpp index plus materialising the packed token rows as an Arrow list column (numpy copy)",
    "trl bfd": "trl pack_dataset(strategy='bfd'), datasets.map batches of 1000 rows, packed rows materialised",
    "trl bfd global": "trl pack_dataset(strategy='bfd', map_kwargs={'batch_size': n}): one batch, rows materialised",
}


@dataclass
class Measurement:
    distribution: str
    capacity: int
    docs: int
    packer: str
    seconds: list[float]
    efficiency: float
    packs: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """Run ``fn`` ``repeats`` times (after a collection, so that no GC pause from earlier work lands in
    a timing); return the seconds of each run and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return seconds, result


def token_column(lengths: np.ndarray) -> pa.Array:
    """An Arrow list column of int32 token ids (all zero: the values do not matter to packing)."""
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pa.array(np.zeros(int(offsets[-1]), dtype=np.int32))
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)


def packed_rows(column: pa.Array, plan: packing.PackArrays) -> pa.Array:
    """The packed token rows as an Arrow list column, one row per pack (documents truncated to the
    capacity, as TRL does): each document's tokens copied once, in packed order."""
    values = column.values.to_numpy(zero_copy_only=True)
    starts = column.offsets.to_numpy()[plan.docs].tolist()
    lens = np.minimum(plan.lengths[plan.docs], plan.capacity)
    tokens = np.concatenate([values[s : s + n] for s, n in zip(starts, lens.tolist())] or [values[:0]])
    offsets = np.zeros(plan.num_packs + 1, dtype=np.int64)
    if plan.num_packs:
        np.cumsum(np.add.reduceat(lens, plan.offsets[:-1]), out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(tokens))
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(tokens))


def bench_ours(name: str, lengths: np.ndarray, capacity: int, repeats: int, twin_repeats: int,
               with_lists: bool) -> list[Measurement]:
    out = []
    runs = [("cpp index", "cpp", repeats), ("numpy index", "numpy", twin_repeats)]
    if packing.BACKEND != "cpp":
        print("  rdistill._C is not built: skipping the C++ rows", file=sys.stderr)
        runs = runs[1:]
    for label, backend, reps in runs:
        secs, plan = timed(lambda b=backend: packing.pack_arrays(lengths, capacity, mode="bfd", overflow="truncate",
                                                                 backend=b), reps)
        out.append(Measurement(name, capacity, lengths.size, label, secs, plan.efficiency, plan.num_packs))
    if with_lists and packing.BACKEND == "cpp":
        secs, plan = timed(lambda: packing.pack(lengths, capacity, mode="bfd", overflow="truncate", backend="cpp"),
                           repeats)
        out.append(Measurement(name, capacity, lengths.size, "cpp lists", secs, plan.efficiency, len(plan.packs)))
    return out


def bench_rows(name: str, lengths: np.ndarray, column: pa.Array, capacity: int, repeats: int) -> Measurement:
    def run() -> tuple[packing.PackArrays, pa.Array]:
        plan = packing.pack_arrays(lengths, capacity, mode="bfd", overflow="truncate")
        return plan, packed_rows(column, plan)

    secs, (plan, rows) = timed(run, repeats)
    assert len(rows) == plan.num_packs and pc.sum(pc.list_value_length(rows)).as_py() == plan.num_tokens
    return Measurement(name, capacity, lengths.size, "cpp rows", secs, plan.efficiency, plan.num_packs)


def bench_trl(name: str, dataset, capacity: int, repeats: int, global_batch: bool) -> Measurement:
    from trl.data_utils import pack_dataset

    kwargs = {"map_kwargs": {"batch_size": len(dataset)}} if global_batch else {}
    secs, packed = timed(lambda: pack_dataset(dataset, capacity, strategy="bfd", **kwargs), repeats)
    tokens = pc.sum(pc.list_value_length(packed.data.column("input_ids"))).as_py()
    eff = tokens / (len(packed) * capacity)
    label = "trl bfd global" if global_batch else "trl bfd"
    return Measurement(name, capacity, len(dataset), label, secs, eff, len(packed))


def write_results(
    rows: list[Measurement], env: dict, run: dict[str, str], args: argparse.Namespace, log: CsvLog
) -> None:
    log.append(
        {**env, **run, "distribution": m.distribution, "capacity": m.capacity, "docs": m.docs, "packer": m.packer,
         "seconds_median": f"{m.median:.6f}", "seconds_all": " ".join(f"{s:.6f}" for s in m.seconds),
         "efficiency": f"{m.efficiency:.6f}", "packs": m.packs, "includes": INCLUDES[m.packer]}
        for m in rows
    )
    trl_time = {(m.distribution, m.capacity): m.median for m in rows if m.packer == "trl bfd"}
    table = []
    for m in rows:
        compared = m.docs == args.trl_docs and not m.packer.startswith("trl")
        ratio = trl_time.get((m.distribution, m.capacity)) if compared else None
        table.append([
            m.distribution, f"{m.capacity:,}", f"{m.docs:,}", m.packer, f"{m.median:.4f}", f"{100 * m.efficiency:.3f}%",
            f"{m.packs:,}", f"{ratio / m.median:,.0f}x" if ratio else "",
        ])
    subset = f"; the {args.trl_docs:,}-document rows are the first {args.trl_docs:,} of the {args.docs:,}"
    lines = [
        "# Packing benchmark (benchmarks/packing.py)",
        "",
        f"{describe(env)} Packer backend {run['backend']}; load average {run['load_before']} before, "
        f"{run['load_after']} after (other jobs share the machine); peak memory of the benchmark {run['peak_rss']}. "
        f"Median of {args.repeats} runs ({args.twin_repeats} for the numpy twin, {args.trl_repeats} for TRL).",
        "",
        "All rows: mode bfd, documents longer than the capacity truncated"
        + (subset if args.trl_docs else "")
        + f". Lengths (rdistill.flops.distributions, seed {args.seed}):",
        "",
        *(f"- {name}: {dist.describe()}" for name, dist in DISTRIBUTIONS.items()),
        "",
        *markdown_table(
            ["distribution", "capacity", "documents", "packer", "seconds", "efficiency", "packs", "TRL bfd / this"],
            table, align="lrrlrrrr",
        ),
        "",
        "What each timing includes:",
        "",
        *(f"- `{k}`: {v}" for k, v in INCLUDES.items()),
    ]
    md_path = args.out_dir / "packing.md"
    md_path.write_text("\n".join(lines) + "\n")
    print(f"wrote {log.path} (appended) and {md_path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000, help="documents for our packers")
    ap.add_argument("--trl-docs", type=int, default=100_000, help="documents for the three-way comparison")
    ap.add_argument("--repeats", type=int, default=5, help="runs per C++ figure (median reported)")
    ap.add_argument("--twin-repeats", type=int, default=3, help="runs per numpy-twin figure")
    ap.add_argument("--trl-repeats", type=int, default=3, help="runs per TRL figure")
    ap.add_argument("--no-trl-global", action="store_true", help="skip TRL with one batch of all rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=RESULTS, help="where packing.csv (appended) and packing.md go")
    args = ap.parse_args(argv)
    env = environment("cpu", VERSION_PACKAGES)
    log = CsvLog(args.out_dir / "packing.csv", [*env, *FIELDS])

    try:
        import datasets
        from trl.data_utils import pack_dataset  # noqa: F401

        datasets.disable_progress_bars()
        have_trl = True
    except ImportError as e:
        print(f"TRL not installed ({e}); skipping the TRL rows. `pip install trl` to include them.", file=sys.stderr)
        have_trl = False

    run = {"backend": packing.BACKEND, "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    print(f"packer backend: {packing.BACKEND}; load average {run['load_before']}")
    rows: list[Measurement] = []
    for name, dist in DISTRIBUTIONS.items():
        lengths = dist.sample(max(args.docs, args.trl_docs), args.seed)
        head = lengths[: args.trl_docs]
        column = dataset = None
        if args.trl_docs:
            column = token_column(head)
            if have_trl:
                dataset = datasets.Dataset(pa.table({"input_ids": column}), fingerprint=f"bench-{name}-{args.seed}")
        for capacity in CAPACITIES:
            batch = bench_ours(name, lengths[: args.docs], capacity, args.repeats, args.twin_repeats, True)
            if args.trl_docs:
                batch += bench_ours(name, head, capacity, args.repeats, args.twin_repeats, False)
                if packing.BACKEND == "cpp":
                    batch.append(bench_rows(name, head, column, capacity, args.repeats))
                if dataset is not None:
                    batch.append(bench_trl(name, dataset, capacity, args.trl_repeats, False))
                    if not args.no_trl_global:
                        batch.append(bench_trl(name, dataset, capacity, args.trl_repeats, True))
            for m in batch:
                print(f"{name:14s} C={capacity:6d} n={m.docs:8d} {m.packer:15s} {m.median:9.4f} s  "
                      f"eff {100 * m.efficiency:7.3f}%  packs {m.packs}")
            rows += batch
        del column, dataset
        gc.collect()
    run["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    run["peak_rss"] = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
    write_results(rows, env, run, args, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
