"""``rdistill data merge``: the shards of one ``rdistill data generate`` joined into one output.

Every shard must be complete and made with the same settings (all but ``out`` and ``shard``) from the
same prompt file, and together they must be every shard 0..K-1, each once. A prompt row answered in two
shards is an error naming both files and lines, unless the two answers are identical (then it is kept
once and counted). The merged log is in row order, the training file is rebuilt from it with the shards'
``--keep``, and the manifest's counts, FLOPs and seconds are those of all the rows, so a merged output
equals one unsharded run's (times aside).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rdistill.io import atomic_writer
from rdistill.teacher_files import (
    GenerateError,
    Manifest,
    OutputFiles,
    Tally,
    append_lines,
    now,
    read_log,
    throughput,
    write_training_file,
)

SHARD_KEYS = ("out", "shard")


@dataclass(frozen=True)
class MergeResult:
    manifest: Manifest
    duplicates: int
    """Rows answered identically in two shards, kept once."""


def merge_shards(shards: Sequence[str | Path], out: str | Path) -> MergeResult:
    """Join the outputs ``shards`` (each the ``--out`` of one shard) into ``out``; GenerateError with the
    file and what to do when they do not make one whole run."""
    if len(shards) < 1:
        raise GenerateError("give the --out file of every shard to merge")
    files = [OutputFiles(Path(s)) for s in shards]
    target = OutputFiles(Path(out))
    if target.pairs in {f.pairs for f in files}:
        raise GenerateError(f"--out {target.pairs} is one of the shards; write the merged file elsewhere")
    manifests = []
    for f in files:
        if not f.manifest.is_file():
            raise GenerateError(f"{f.pairs}: no {f.manifest.name} beside it: not an output of rdistill data generate")
        manifests.append(Manifest.read(f.manifest))
    first = manifests[0]
    count = first.shard["count"]
    base = {k: v for k, v in first.settings.items() if k not in SHARD_KEYS}
    seen: dict[int, Path] = {}
    for f, m in zip(files, manifests):
        settings = {k: v for k, v in m.settings.items() if k not in SHARD_KEYS}
        if settings != base or m.prompts_sha256 != first.prompts_sha256:
            differ = sorted(k for k in settings.keys() | base.keys() if settings.get(k) != base.get(k)) or ["prompt file"]
            raise GenerateError(f"{f.manifest}: made with other settings than {files[0].manifest} ({', '.join(differ)}); "
                                "only shards of one command can be merged")
        index = m.shard["index"]
        if index in seen:
            raise GenerateError(f"{f.manifest} and {seen[index]} are both shard {index}; give each shard once")
        seen[index] = f.manifest
        if m.status != "complete":
            raise GenerateError(f"{f.manifest}: shard {index} is {m.status} ({m.counts.get('prompts', 0)} of "
                                f"{m.shard['prompts']} prompts answered); rerun its command to finish it, then merge")
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise GenerateError(f"shards {', '.join(map(str, missing))} of {count} are missing; give the --out file of "
                            "every shard")
    rows: dict[int, dict] = {}
    where: dict[int, str] = {}
    duplicates = 0
    for f in files:
        for no, r in enumerate(read_log(f.log, repair=False), 1):
            here = f"{f.log}:{no}"
            if r["row"] in rows:
                if rows[r["row"]] != r:
                    raise GenerateError(f"prompt row {r['row']} is answered differently in {where[r['row']]} and {here}; "
                                        "the shards do not come from one command: regenerate one of them")
                duplicates += 1
                continue
            rows[r["row"]], where[r["row"]] = r, here
    ordered = [rows[k] for k in sorted(rows)]
    with atomic_writer(target.log) as log_f:
        append_lines(log_f, ordered)
    keep = base["keep"]
    write_training_file(target.pairs, ordered, keep)
    tally = Tally(ordered)
    seconds = sum(m.seconds for m in manifests)
    merged = Manifest(
        settings={**first.settings, "shard": None}, prompts_sha256=first.prompts_sha256, teacher=first.teacher,
        template=first.template, shard={"index": -1, "count": count, "prompts": sum(m.shard["prompts"] for m in manifests)},
        counts=tally.counts(keep), flops=tally.flops(), seconds=seconds, throughput=throughput(tally, seconds),
        environment=first.environment, started=min(m.started for m in manifests), updated=now(), status="complete",
        shards=[{"index": m.shard["index"], "prompts": m.shard["prompts"], "seconds": m.seconds,
                 "device": m.environment.get("device"), "file": str(f.pairs)} for f, m in zip(files, manifests)])
    merged.write(target.manifest)
    return MergeResult(merged, duplicates)
