"""Duplicate YAML keys are refused, naming the file and the line, in every YAML the project reads: one
reader, dcod.io.load_yaml (issue 29)."""

import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from dcod.config import ConfigError, load_experiment, load_profile
from dcod.io import DuplicateKeyError, load_yaml, parse_yaml


def test_a_duplicate_key_names_the_file_and_both_lines(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("train:\n  clip: 5.0\n  lr: 1.0e-4\n  clip: 2.0\n")
    with pytest.raises(DuplicateKeyError) as error:
        load_yaml(path)
    message = str(error.value)
    assert f'in "{path}", line 4' in message and "duplicate key 'clip' (first at line 2, again at line 4)" in message


def test_a_profile_with_a_duplicate_key_is_refused(tmp_path):
    text = (REPO / "config/profiles/ci.yaml").read_text()
    path = tmp_path / "ci.yaml"
    path.write_text(text.replace("train:\n", "train:\n  steps: 9\n", 1))  # ci's train: already has steps: 4
    with pytest.raises(ConfigError, match=rf"(?s){re.escape(str(path))}.*duplicate key 'steps'.*line \d+"):
        load_profile(path)


def test_an_experiment_with_a_duplicate_key_is_refused(tmp_path):
    folder = tmp_path / "experiments" / "x"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("name: x\nmethod: sft\nparams: {}\nmethod: kd\n")
    with pytest.raises(ConfigError, match=r"(?s)x/config.yaml.*duplicate key 'method' \(first at line 2, again at line 4\)"):
        load_experiment(folder / "config.yaml")


def test_a_duplicate_key_in_a_set_override_is_refused():
    with pytest.raises(ConfigError, match="override"):
        load_profile(REPO / "config/profiles/ci.yaml", ["world.seed={a: 1, a: 2}"])


def test_a_benchmark_declaration_with_a_duplicate_key_is_refused(monkeypatch, tmp_path):
    from dcod import benchmarks

    text = (REPO / "src/dcod/benchmarks/gsm8k.yaml").read_text()
    key = next(line.split(":")[0] for line in text.splitlines() if re.match(r"^\w+:", line))
    (tmp_path / "gsm8k.yaml").write_text(text + f"{key}: again\n")
    monkeypatch.setattr(benchmarks, "_declaration_files", lambda: {"gsm8k": tmp_path / "gsm8k.yaml"})
    with pytest.raises(ValueError, match=rf"(?s)gsm8k.yaml.*duplicate key '{key}'"):
        benchmarks.get_benchmark("gsm8k")


def test_merge_keys_and_plain_mappings_still_load():
    assert parse_yaml("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 3\n") == {"a": {"b": 1, "c": 2}, "d": {"b": 3, "c": 2}}


def test_every_yaml_of_the_project_loads_without_duplicates():
    files = [*REPO.glob("config/**/*.yaml"), *REPO.glob("experiments/*/config.yaml"),
             *REPO.glob("src/dcod/**/*.yaml"), *REPO.glob("workflow/**/*.yaml")]
    assert len(files) > 20
    for path in files:
        load_yaml(path)


def test_the_package_and_the_dag_read_yaml_only_through_load_yaml():
    """One home: a new yaml.safe_load elsewhere would accept duplicate keys again."""
    sources = [*REPO.glob("src/dcod/**/*.py"), *REPO.glob("workflow/**/*.smk"), REPO / "Snakefile"]
    offenders = [str(p.relative_to(REPO)) for p in sources if p != REPO / "src/dcod/io.py"
                 and re.search(r"yaml\.(safe_)?load\(|yaml\.(full_|unsafe_)load|SafeLoader", p.read_text())]
    assert offenders == []
    assert isinstance(DuplicateKeyError("x"), yaml.YAMLError)  # existing `except yaml.YAMLError` handlers see it
