"""``python -m dcod <subcommand>``: one subcommand per pipeline stage (each Snakemake rule calls one)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from dcod.config import ConfigError, load_profile


def _seed(text: str) -> int:
    """argparse type of --seed: an integer >= 0 (a negative one would fail late, inside numpy, unnamed)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return seed


def _positive_number(text: str) -> float:
    """argparse type of --lr and --timeout: finite and > 0 (float() accepts 'nan' and 'inf')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _profile(args):
    """The profile, with the checks that need the toy world or the benchmark declarations made too."""
    from dcod.splits import check_profile

    return check_profile(load_profile(args.profile, args.set or ()))


def _folder(path: str) -> Path:
    """Rules pass a file that marks a finished folder (world.json, run.json, metrics.csv): use its folder."""
    path = Path(path)
    return path.parent if path.suffix in (".json", ".csv") else path


def cmd_world(args):
    from dcod.pipeline import stage_world

    stage_world(_profile(args), _folder(args.out))


def cmd_base_student(args):
    if args.shipped:  # a shipped base student, checked against its manifest and copied (dcod.shipped)
        from dcod.shipped import copy_shipped

        copy_shipped(_profile(args), _folder(args.world), Path(args.shipped), Path(args.out))
        return
    from dcod.pipeline import stage_base_student

    stage_base_student(_profile(args), _folder(args.world), Path(args.out), threads=args.threads)


def cmd_ship_base_students(args):
    import shlex

    from dcod.shipped import export

    command = shlex.join(["python", "-m", "dcod", *args.argv])
    manifest = export(_profile(args), Path(args.work), Path(args.out), command)
    for name, student in manifest["students"].items():
        accuracy = ", ".join(f"{split} {value:.1f}%" for split, value in student["accuracy"].items())
        print(f"{args.out}/{name}: {accuracy}")


def cmd_traces(args):
    from dcod.pipeline import stage_traces

    stage_traces(_profile(args), _folder(args.world), Path(args.out))


def cmd_student_traces(args):
    from dcod.pipeline import stage_student_traces

    stage_student_traces(_profile(args), _folder(args.world), Path(args.base), Path(args.traces), args.seed,
                         Path(args.out))


def cmd_score_traces(args):
    from dcod.pipeline import stage_score_traces

    stage_score_traces(_profile(args), Path(args.base), Path(args.traces), Path(args.out))


def cmd_rescore(args):
    from dcod.rescore import TraceSource, stage_rescore

    source = TraceSource(args.traces_from, prompt_field=args.prompt_field, completion_field=args.completion_field,
                         id_field=args.id_field, gold_field=args.gold_field, gold_normaliser=args.gold_normaliser,
                         revision=args.revision, split=args.split, config=args.dataset_config, limit=args.limit)
    stage_rescore(_profile(args), source, Path(args.out))


def cmd_train(args):
    from dcod.pipeline import stage_train

    stage_train(_profile(args), Path(args.experiment), args.seed, _folder(args.world), Path(args.base),
                Path(args.traces), _folder(args.out), lr=args.lr, lr_table=args.lr_table,
                passes={"student_traces": args.student_traces, "trace_scores": args.trace_scores})


def cmd_tuning(args):
    from dcod.tuning import write_tuning

    work = Path(args.work)
    work = work.parent.parent if work.name == "world.json" else work  # the rule passes <work>/world/world.json
    write_tuning(args.profile, work, args.experiment_list.split(","), args.out)


def cmd_config(args):
    """``config show``: the resolved training budget of one experiment on one profile, and where its
    learning rate comes from (the profile's table, its tuning results, or its one train.lr)."""
    import yaml

    from dcod.config import learning_rate_for, learning_rate_needs_tuning, load_experiment, train_config_for

    profile = _profile(args)
    path = Path(args.experiment)
    if not path.is_file() and (Path("experiments") / args.experiment / "config.yaml").is_file():
        path = Path("experiments") / args.experiment / "config.yaml"  # a bare experiment name
    experiment = load_experiment(path)
    if learning_rate_needs_tuning(profile, experiment) and not args.lr_table:
        rate = {"value": None, "origin": f"{profile.source}: tuned in the DAG: the grid "
                f"{profile.tuning.lrs} chooses on {profile.tuning.split} (pass --lr-table "
                "results/<profile>/tuning.csv once it is built)"}
        train = train_config_for(profile, experiment).model_dump(mode="json")
        train["lr"] = None
    else:
        resolved = learning_rate_for(profile, experiment, args.lr_table)
        rate = resolved.model_dump()
        train = train_config_for(profile, experiment, lr=resolved.value).model_dump(mode="json")
    print(yaml.safe_dump({"profile": profile.source, "experiment": str(path), "learning_rate": rate,
                          "train": train}, sort_keys=False, width=1000), end="")


TEACHERS = {"teacher": "teacher", "teacher_direct": "teacher:direct", "teacher_decomposed": "teacher:decomposed"}


def cmd_evaluate(args):
    from dcod.pipeline import stage_evaluate

    if args.model == "base_student":
        if not args.base:
            raise ValueError("--model base_student needs --base <base student folder>")
        model = args.base
    elif args.model in TEACHERS:
        model = TEACHERS[args.model]
    elif args.model.endswith("run.json"):  # a finished run: its model folder sits beside run.json
        model = str(Path(args.model).parent / "model")
    else:
        model = args.model
    splits = args.splits.split(",") if args.splits else None
    stage_evaluate(_profile(args), _folder(args.world), model, _folder(args.out), seed=args.seed, splits=splits,
                   stability=not (args.no_stability or _is_ablation(args.model)))


def _is_ablation(model: str) -> bool:
    """Table 2 rows report no trace-stability columns, so their evaluation skips those samples."""
    if not model.endswith("run.json"):
        return False
    import json

    return json.loads(Path(model).read_text())["experiment"]["table"] == "ablation"


def cmd_grade(args):
    from dcod.grading import run_cli  # prints the summary as JSON; handles SIGTERM/SIGINT/SIGHUP

    code = run_cli(args.input, args.output, timeout=args.timeout, workers=args.workers)
    if code:
        sys.exit(code)


def cmd_report(args):
    from dcod.reporting import cli as reporting_cli

    reporting_cli.run(args)


def cmd_inspect(args):
    from dcod.reporting.inspect import run

    run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcod", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_text, *, profile=True):
        p = sub.add_parser(name, help=help_text)
        if profile:
            p.add_argument("--profile", required=True, help="profile YAML, e.g. config/profiles/toy.yaml")
            p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                           help="override one profile value (repeatable), e.g. --set teacher.p_direct=0.25")
        p.set_defaults(func=func)
        return p

    p = add("world", cmd_world, "generate the toy world's splits and tokenizer")
    p.add_argument("--out", required=True)
    p = add("base-student", cmd_base_student, "pre-train the toy base student")
    p.add_argument("--world", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the profile's)")
    p.add_argument("--shipped", default=None, help="copy this shipped base student (<pretrain.shipped>/"
                   "pretrain_seed<S>) after checking it against its manifest, instead of pre-training")
    p = add("ship-base-students", cmd_ship_base_students, "export the main world's base students with their "
            "manifest (docs/reproducibility.md, Shipped base students)")
    p.add_argument("--work", required=True, help="the profile's work folder, e.g. work/toy_next")
    p.add_argument("--out", required=True, help="the shipped folder, e.g. models/toy_next")
    p = add("traces", cmd_traces, "sample verified teacher traces with log-probs and top-k")
    p.add_argument("--world", required=True)
    p.add_argument("--out", required=True)
    p = add("student-traces", cmd_student_traces, "sample the base student once per training prompt, scored by "
            "the teacher (an offline student pass: docs/architecture.md)")
    for name in ("world", "base", "traces", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seed", type=_seed, required=True, help="the training seed whose base student samples")
    p = add("score-traces", cmd_score_traces, "score every teacher trace under the base student: per-token NLL "
            "and rank (an offline student pass: docs/architecture.md)")
    for name in ("base", "traces", "out"):
        p.add_argument(f"--{name}", required=True)
    p = add("rescore", cmd_rescore, "an existing trace dataset scored by the teacher: the traces file "
            "(docs/paper_setting.md, Bring your own traces)")
    p.add_argument("--traces-from", required=True, help="a local .jsonl / .parquet file, or a hub dataset id")
    p.add_argument("--revision", default=None, help="the hub dataset's commit sha or tag (required for a hub id)")
    p.add_argument("--split", default="train", help="the hub dataset's split")
    p.add_argument("--dataset-config", default=None, help="the hub dataset's configuration name")
    p.add_argument("--prompt-field", default="prompt")
    p.add_argument("--completion-field", default="completion")
    p.add_argument("--id-field", default=None, help="default: the row index")
    p.add_argument("--gold-field", default=None, help="grade the completions against it (traces.keep_only_correct)")
    p.add_argument("--gold-normaliser", default="identity", help="as in dcod/benchmarks/*.yaml, e.g. gsm8k_hash")
    p.add_argument("--limit", type=int, default=0, help="the first N rows only (0: all)")
    p.add_argument("--out", required=True, help="the traces file, e.g. work/<profile>/traces/train.parquet")
    p = add("train", cmd_train, "train one experiment with one seed")
    p.add_argument("--experiment", required=True, help="experiments/<name>/config.yaml")
    for name in ("world", "base", "traces", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--lr", type=_positive_number, default=None,
                   help="override the learning rate (a point of the tuning grid)")
    p.add_argument("--lr-table", default=None,
                   help="the profile's tuning results (results/<profile>/tuning.csv), for learning_rates.source tuning")
    p.add_argument("--seed", type=_seed, required=True)
    p.add_argument("--student-traces", default=None, help="the seed's student traces (methods that need them)")
    p.add_argument("--trace-scores", default=None, help="the seed's trace scores (methods that need them)")
    p = add("tuning", cmd_tuning, "choose each method's learning rate from its grid runs on the validation split",
            profile=False)
    p.add_argument("--profile", required=True, help="profile YAML")
    p.add_argument("--work", required=True, help="the profile's work folder, or its world/world.json")
    p.add_argument("--experiment-list", required=True, help="comma-separated Table 1 experiments")
    p.add_argument("--out", required=True)
    p = add("config", cmd_config, "show an experiment's resolved training config on a profile")
    p.add_argument("what", choices=["show"])
    p.add_argument("--experiment", required=True, help="experiments/<name>/config.yaml, or <name>")
    p.add_argument("--lr-table", default=None, help="the profile's tuning results, for learning_rates.source tuning")
    p = add("evaluate", cmd_evaluate, "greedy pass@1 on every split of the profile")
    p.add_argument("--world", required=True)
    p.add_argument("--model", required=True, help="a model directory, a run.json, or one of base_student, "
                   "teacher, teacher_direct, teacher_decomposed")
    p.add_argument("--base", default=None, help="the base student folder (with --model base_student)")
    p.add_argument("--splits", default=None, help="comma-separated subset of the profile's splits")
    p.add_argument("--no-stability", action="store_true", help="skip the trace-stability samples")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=_seed, default=0)
    p = add("grade", cmd_grade, "grade a JSONL of {gold, prediction} lines", profile=False)
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--timeout", type=_positive_number, default=5.0, help="seconds per item (at most a day)")
    p.add_argument("--workers", type=int, default=2)
    p = add("report", cmd_report, "calibration, tables, figures and the generated report", profile=False)
    p.add_argument("what", help="calibration | table1 | table2 | table3 | tuning | robustness | base_students "
                   "| figure:<name> | paper | compare | publish")
    p.add_argument("--profile", default=None, help="profile YAML (recorded in the outputs)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="claims and paper: override one profile value (repeatable), e.g. --set results=smoke")
    p.add_argument("--work", default=None, help="the profile's work folder, e.g. work/toy")
    p.add_argument("--experiment-list", default="", help="comma-separated experiment names")
    p.add_argument("--seeds", default="", help="comma-separated seeds")
    p.add_argument("--experiments", default="experiments", help="experiments folder (their configs)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--figures-dir", default="figures")
    p.add_argument("--published", default=None, help="compare: the published snapshot's table1.csv; "
                   "table3: its results folder")
    p.add_argument("--worlds", default="", help="robustness: comma-separated name=<work>/world/world.json pairs")
    p.add_argument("--manifest", default=None, help="base_students: the shipped base students' manifest.json")
    p.add_argument("--out", required=True)
    p = add("inspect", cmd_inspect, "one problem (or a filtered set) across every model and seed of a work folder",
            profile=False)
    p.add_argument("ids", nargs="*", help="problem ids, e.g. id-00003 (default: every problem the filters keep)")
    p.add_argument("--work", required=True, help="the work folder, e.g. work/ci")
    p.add_argument("--split", default=None)
    p.add_argument("--correct", action="append", metavar="MODEL", help="keep problems MODEL (every seed) got right")
    p.add_argument("--incorrect", action="append", metavar="MODEL", help="keep problems MODEL (every seed) got wrong")
    p.add_argument("--disagree", default=None, metavar="A,B", help="keep problems where A and B (same seed) differ")
    p.add_argument("--models", default=None, help="comma-separated models to show (default: all)")
    p.add_argument("--seed", type=_seed, default=None, help="show the runs of this seed only (and references)")
    p.add_argument("--limit", type=int, default=10, help="at most N problems (0: all; ignored with ids)")
    p.add_argument("--format", choices=["text", "md", "html"], default="text")
    p.add_argument("--json", action="store_true", help="machine-readable output (overrides --format)")
    p.add_argument("--width", type=int, default=None, help="text width (default: the terminal's)")
    p.add_argument("--out", default=None, help="write to this file instead of stdout")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, as a manifest records it
    try:
        args.func(args)
    except Exception as error:
        if not isinstance(error, _reported_errors()):
            raise  # a bug, not bad input: keep the traceback
        print(f"dcod {args.command}: error: {error}", file=sys.stderr)
        sys.exit(2)


def _reported_errors() -> tuple[type, ...]:
    """Errors whose message names the bad input (file, key, step): printed as one line, exit code 2.
    Training's own errors can only occur once dcod.training is imported (it imports torch, which the
    grade and report commands never need)."""
    errors: list[type] = [ConfigError, FileNotFoundError, ValueError]
    training = sys.modules.get("dcod.training")
    if training is not None:
        errors += [training.NonFiniteLossError, training.CheckpointWriteError]
    return tuple(errors)


if __name__ == "__main__":
    main()
