import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DCOD_DATA_DIR", REPO.parent / "shared" / "data"))

# subprocesses (snakemake rules call `python -m dcod`) must find this interpreter's packages
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def toy_tokenizer():
    from dcod.toy.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def ci_profile():
    from dcod.config import load_profile

    return load_profile(REPO / "config" / "profiles" / "ci.yaml")
