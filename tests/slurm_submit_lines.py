"""Print the sbatch line the Slurm executor plugin would submit for every job of a dry-run DAG.

    python tests/slurm_submit_lines.py --directory /tmp/x -- --config profile=paper

Runs Snakemake's own command line with ``--profile config/slurm --dag`` (so the profile's
default-resources, set-resources and set-threads are applied exactly as on a cluster), but replaces
``Workflow.printdag`` by a function that, once the DAG is built, renders each job with the plugin's
``get_submit_command`` + ``set_gres_string`` (what ``Executor.run_job`` calls) and prints one JSON line
per job: rule, wildcards, whether the job runs on the login node (``localrules``) and the submit line. Account and
partition are rendered from the job's resources as the plugin's ``get_account_arg`` /
``get_partition_arg`` do without a partition file and without querying ``sacctmgr``. No Slurm needed.
"""

import json
import sys
from pathlib import Path

import snakemake.api  # noqa: F401  (imports snakemake.workflow in the order it needs)
from snakemake.workflow import Workflow
from snakemake_executor_plugin_slurm.submit_string import get_submit_command, safe_quote
from snakemake_executor_plugin_slurm.utils import set_gres_string

REPO = Path(__file__).resolve().parents[1]


def render(job) -> str:
    params = {"run_uuid": "RUN", "slurm_logfile": f".snakemake/slurm_logs/rule_{job.rule.name}/%j.log",
              "comment_str": f"rule_{job.rule.name}",
              "account": f"-A {safe_quote(job.resources.get('slurm_account'))}",
              "partition": f"-p {safe_quote(job.resources.get('slurm_partition'))}", "workdir": None}
    return get_submit_command(job, params) + set_gres_string(job)


def printdag(self):
    self._prepare_dag(forceall=self.dag_settings.forceall, ignore_incomplete=True, lock_warn_only=True)
    self._build_dag()
    for job in self.dag.jobs:
        if job.is_norun:  # target rules without a command (`all`) are never submitted
            continue
        # Workflow.is_local without its local_exec part (a --dag run is a local run: every job would be)
        local = job.rule.group is None and job.rule.name in self._localrules
        print(json.dumps({"rule": job.rule.name, "wildcards": dict(job.wildcards_dict), "local": local,
                          "submit": render(job)}))


if __name__ == "__main__":
    from snakemake.cli import main

    Workflow.printdag = printdag
    args = sys.argv[1:]
    extra = args[args.index("--") + 1:] if "--" in args else []
    directory = args[args.index("--directory") + 1]
    sys.argv = ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", directory, "--profile",
                str(REPO / "config" / "slurm"), "--dag", *extra]
    main()
