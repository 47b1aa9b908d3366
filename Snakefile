# dcod: the whole paper pipeline as one DAG.
#   snakemake --cores all results/table1.csv                 # Table 1 of the default (toy) profile
#   snakemake --cores all results/ci/table1.csv --config profile=ci   # a target goes before --config
#   make resume                                     # after a kill: unlock, redo the incomplete jobs
# Rules are thin: each calls one `python -m dcod` subcommand. Experiments are discovered from
# experiments/*/config.yaml; seeds come from the profile.
#   snakemake --config profile=ci --report paper/ci/snakemake_report.html   # Snakemake's HTML report (make report)

from snakemake.utils import min_version

# the version pinned in pyproject.toml, the one the DAG and its report are tested with
min_version("9.27")

include: "workflow/rules/common.smk"
include: "workflow/rules/pipeline.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cluster.smk"


rule all:
    input:
        TABLE1,
        TABLE2,
        TABLE3,
        CALIBRATION,
        FIGURES,
        REPORT,
        COMPARISON,
        ROBUSTNESS_TARGETS,
        FLOAT_PATH_TARGETS,
        BASE_STUDENTS_CHECK,
    default_target: True
