"""Writing results (dcod/io.py): nothing half-written looks finished; an unusable folder is a clear error
(issue 11)."""

import pytest

from dcod.io import atomic_path, write_json


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    """A results 'folder' that cannot hold files (here: it is a file; CI runs as root, so permission
    bits would not stop it) raises at once and leaves the existing file untouched."""
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        write_json(blocker / "table1.json", {"a": 1})
    assert blocker.read_text() == "not a folder"
