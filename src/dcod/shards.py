"""Resumable work in shards: finished shards survive an interrupted job, unfinished ones are redone.

Teacher-trace generation and evaluation split their prompts into shards of a fixed size. Each shard's
rows are written atomically to ``<folder>/part-NNNNN.jsonl`` as soon as the shard is done, so a job
killed at any point leaves only complete shards behind; rerunning the same job (Snakemake reruns a
job whose output is missing) computes only the missing shards and then writes its output from all of
them. Results do not depend on where a job was interrupted: a shard's work gets the shard index (for
a per-shard sampling seed), never state carried over from earlier shards.

``<folder>/fingerprint.json`` records what the shards were computed from (configuration, model, input
file digests, and the package's source fingerprint, which tells uncommitted edits apart); shards with
another fingerprint are discarded, never mixed in (docs/architecture.md, "Checkpoints"). The folder is
removed once the job's output is written, so shards never outlive the interrupted job they rescue.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Sequence

from dcod.io import plain_json, read_jsonl, source_fingerprint, write_json, write_jsonl


def run_sharded(folder: str | Path, fingerprint: dict, items: Sequence, shard_size: int,
                work: Callable[[int, list], list[dict]], *, desc: str = "shards",
                progress: bool = True) -> list[dict]:
    """``work(shard_index, items_of_the_shard)`` for every shard not already finished in ``folder``;
    returns the rows of all shards in item order. Call ``finish(folder)`` after writing the output.
    ``fingerprint`` names what the work depends on; the package's source fingerprint is added here."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    folder = Path(folder)
    stamp = plain_json({**fingerprint, "source_sha256": source_fingerprint()})
    stamp_path = folder / "fingerprint.json"
    if folder.exists():
        try:
            previous = json.loads(stamp_path.read_text()) if stamp_path.is_file() else None
        except ValueError:
            previous = None
        if previous != stamp:  # computed from something else (or unmarked): never mixed in
            previous = previous if isinstance(previous, dict) else {}
            differs = sorted(k for k in set(stamp) | set(previous) if stamp.get(k) != previous.get(k))
            print(f"{desc}: shards in {folder} were computed from other inputs (differs in: "
                  f"{', '.join(differs)}); starting fresh", flush=True)
            shutil.rmtree(folder)
    if not stamp_path.is_file():
        write_json(stamp_path, stamp)
    starts = range(0, len(items), shard_size)
    done = sum((folder / f"part-{index:05d}.jsonl").is_file() for index in range(len(starts)))
    if done:
        print(f"{desc}: resuming, {done} of {len(starts)} shards already finished in {folder}", flush=True)
    shards = enumerate(starts)
    if progress:
        from tqdm import tqdm

        shards = tqdm(shards, total=len(starts), desc=desc, unit="shard")
    rows: list[dict] = []
    for index, start in shards:
        path = folder / f"part-{index:05d}.jsonl"
        if path.is_file():
            rows.extend(read_jsonl(path))
            continue
        write_jsonl(path, work(index, list(items[start:start + shard_size])))
        rows.extend(read_jsonl(path))  # read back: a resumed job sees exactly what a fresh one sees
    return rows


def shard_seed(seed: int, index: int) -> int:
    """The sampling seed of shard ``index`` of a job seeded with ``seed``."""
    return seed * 100_003 + index


def finish(folder: str | Path) -> None:
    """Remove the shards once the output they were combined into is written."""
    shutil.rmtree(folder, ignore_errors=True)
