"""Atomic writes: every result is written to a temporary sibling and renamed into place.

A crashed or killed job therefore never leaves a file that looks finished, and Snakemake never sees a
partial output. ``os.replace`` is atomic on POSIX within one filesystem; temporary siblings live in
the same directory for that reason. Also the one YAML reader of the project (``load_yaml``: duplicate
keys refused) and the code fingerprints.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o755 if directory else 0o644)  # mkstemp/mkdtemp create owner-only modes
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return rows


def write_csv(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def write_parquet(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names one key twice. Plain YAML loaders keep the last value silently (``clip: 5.0`` then
    ``clip: 2.0`` reads 2.0); every YAML the project reads goes through ``load_yaml``, which refuses it."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat what it merges
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: SafeLoader refuses it with its own message
                    continue
                if seen is not key_node.start_mark:
                    raise DuplicateKeyError(
                        f"while reading a mapping (line {node.start_mark.line + 1})", node.start_mark,
                        f"duplicate key {key!r} (first at line {seen.line + 1}, again at line "
                        f"{key_node.start_mark.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """YAML text as plain data (safe types only), refusing duplicate keys; errors name ``source`` and the
    line."""
    loader = _UniqueKeyLoader(text)
    loader.name = str(source)  # the marks of its errors: in "<source>", line N
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> Any:
    """A YAML file as plain data (``parse_yaml``); errors name the file and the line."""
    path = Path(path)
    return parse_yaml(path.read_text(encoding="utf-8"), str(path))


def code_version() -> str:
    """The git commit of the code that produced an artifact (``+dirty`` if the code or the configs have
    uncommitted changes, a new file not yet committed included: a new method module runs too; regenerated
    results, figures and docs do not count). Each stage records it when it runs, so a table carries the
    versions that trained and evaluated its rows, never the checkout's at report time."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all", "--",
                                "src", "workflow", "Snakefile", "config", "experiments", "pyproject.toml"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


LOCK_FILE = "requirements.lock"  # every package's version and hash (`make lock`; README, "Setup")


def installed_packages() -> dict[str, str]:
    """Every distribution installed in this interpreter, as pip freeze names them: normalised name -> version."""
    from importlib import metadata

    return {_normalised(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
            if dist.metadata["Name"]}


def _normalised(name: str) -> str:
    """PEP 503's form of a distribution name (``Foo_bar.baz`` -> ``foo-bar-baz``), as the lock writes it."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def environment_version() -> dict[str, str | int | None]:
    """The resolved environment beside ``code_version`` (run.json, world.json, the published provenance):
    the lock file's SHA-256 (None outside a checkout) and a digest of every installed ``name==version``, which
    differs from the lock's when the environment was not installed from it. Once per process."""
    lock = Path(__file__).resolve().parents[2] / LOCK_FILE
    packages = installed_packages()
    frozen = "\n".join(f"{name}=={version}" for name, version in sorted(packages.items()))
    return {"lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None,
            "packages_sha256": hashlib.sha256(frozen.encode()).hexdigest(), "packages": len(packages)}


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """SHA-256 over the package's source: every ``src/dcod/**/*.py`` and ``*.yaml``, relative path and
    content, sorted by path. Unlike ``code_version`` (``+dirty`` for any edit) it tells two uncommitted
    edits apart; resumable artefacts carry it (docs/architecture.md, "Checkpoints"). Once per process."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(package).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def content_digest(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative path, size and content, sorted by path; hidden
    names such as Snakemake's ``.snakemake_timestamp`` or a writer's ``.x.tmp`` are skipped). Unlike size
    and mtime it survives a copy and changes whenever an upstream job writes other bytes."""
    path = Path(path)
    if path.is_file():
        files = {"": path}
    elif path.is_dir():
        files = {p.relative_to(path).as_posix(): p for p in path.rglob("*") if p.is_file()}
        files = {name: p for name, p in sorted(files.items()) if not any(
            part.startswith(".") for part in name.split("/"))}
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    digest = hashlib.sha256()
    for name, file in files.items():
        digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def plain_json(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists, keys strings), so that a fingerprint
    compares equal to its stored copy."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))
