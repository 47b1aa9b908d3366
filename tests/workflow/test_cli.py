"""The command line (dcod/cli.py): a command's own errors end it with one line and exit code 2; the
seed and learning-rate flags are checked (issue 11)."""

import pytest

from dcod import cli
from dcod.training import CheckpointWriteError, NonFiniteLossError


@pytest.mark.parametrize("error", [NonFiniteLossError("sft (seed 0, lr 1e+30): non-finite loss at step 3"),
                                   CheckpointWriteError(28, "writing the checkpoint work/x/checkpoint failed")])
def test_training_errors_end_the_command_with_one_line_and_exit_2(monkeypatch, capsys, error):
    """The train command's own errors name the run, step or path: printed as one line, exit code 2
    (a bug elsewhere keeps its traceback)."""
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "cmd_train", fail)
    argv = ["train", "--profile", "p.yaml", "--experiment", "e.yaml", "--world", "w", "--base", "b",
            "--traces", "t", "--out", "o", "--seed", "0"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"dcod train: error: {error}"

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_train", bug)
    with pytest.raises(KeyError):
        cli.main(argv)


TRAIN = ["train", "--profile", "p.yaml", "--experiment", "e.yaml", "--world", "w", "--base", "b",
         "--traces", "t", "--out", "o"]
EVALUATE = ["evaluate", "--profile", "p.yaml", "--world", "w", "--model", "m", "--out", "o"]


@pytest.mark.parametrize("argv, flag, value", [
    (TRAIN + ["--seed", "-1"], "--seed", "-1"),
    (TRAIN + ["--seed", "1.5"], "--seed", "1.5"),
    (EVALUATE + ["--seed", "-3"], "--seed", "-3"),
    (TRAIN + ["--seed", "0", "--lr", "nan"], "--lr", "nan"),
    (TRAIN + ["--seed", "0", "--lr", "inf"], "--lr", "inf"),
    (TRAIN + ["--seed", "0", "--lr", "0"], "--lr", "0"),
    (TRAIN + ["--seed", "0", "--lr=-1e-3"], "--lr", "-1e-3"),  # "--lr -1e-3" would read as a flag
])
def test_seed_and_lr_flags_are_checked(capsys, argv, flag, value):
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(argv)
    assert stop.value.code == 2
    assert f"argument {flag}: must be " in (err := capsys.readouterr().err) and repr(value) in err, err


def test_good_seed_and_lr_flags_pass():
    arguments = cli.build_parser().parse_args(TRAIN + ["--seed", "0", "--lr", "2e-3"])
    assert (arguments.seed, arguments.lr) == (0, 2e-3)
    assert cli.build_parser().parse_args(EVALUATE + ["--seed", "12"]).seed == 12
