"""pyproject.toml and environment.yml pin the same versions (two install routes, one environment)."""

import tomllib

import yaml

from conftest import REPO


def test_environment_yml_matches_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # what `make setup` installs: the package with its dev, ifeval and cluster extras
    pinned = set(project["dependencies"]) | set(extras["dev"]) | set(extras["ifeval"]) | set(extras["cluster"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = {line for line in pip_section if not line.startswith("-e")}
    assert conda_pins == pinned
    assert "python=3.11" in env["dependencies"]
    assert all("==" in dep for dep in pinned), "every dependency must be pinned exactly"
    assert "torch==2.13.0" in pinned
