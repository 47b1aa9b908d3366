# Tables, calibration, figures and the generated report: one rule (and one script) each.
# --work gets the world marker (work/<profile>/world/world.json) and --results-dir / --figures-dir a file
# inside the folder, so every path the command uses is derived from a declared input.

from dcod.layout import TABLE3_FIGURES

# Table 3, prior offline methods (docs/claims.md): every `table: prior` experiment beside the Table 1 runs it
# is read against (subject and baseline, the same runs). In `make all`, never an input of Table 1's target.
TABLE3 = f"{R}/table3.csv"
CLAIMS_TABLE1 = f"{R}/claims_table1.csv"  # the claims on Table 1 alone: what comparisons of Table 1s read
TABLE3_TIMING = f"{R}/table3_timing.csv"
TABLE3_AGAINST = [e for e in dict.fromkeys([P.report.subject, BASELINE]) if e in MAIN]
PUBLISHED_TABLE3_INPUTS = [p for p in (PUBLISHED_TABLE1, PUBLISHED / "results" / "table3.csv") if p.is_file()]


rule calibration:
    # the base student here is the profile's own (pretrain.seed), also under pretrain.per_seed: the knife-edge
    # and plateau targets compare it with the other pre-training seeds and with more steps
    input:
        references(REFERENCES),
        evals([BASELINE] if BASELINE in MAIN else [], SEEDS),
        evals(ORACLE, SEEDS),
        CALIBRATION_EVALS,
        knife_edge_evals([W]),
        # the teacher-term target: the training traces' stored teacher log-probs, scored by the base student
        traces=f"{W}/traces/train.parquet",
        base=f"{W}/base_student",
        world=f"{W}/world/world.json",
    output:
        marker=report(f"{R}/calibration.csv", caption="../report/calibration.rst", category="calibration", subcategory="table"),
        markdown=report(f"{R}/calibration.md", caption="../report/calibration.rst", category="calibration", subcategory="report"),
    params:
        **STAGE_PARAMS["report"],
        seeds=",".join(map(str, SEEDS)),
    log:
        f"{W}/logs/report/calibration.log",
    conda:
        ENV
    shell:
        "python -m dcod report calibration --profile {params.profile} --work {input.world} "
        "--seeds {params.seeds} --out {output.marker} > {log} 2>&1"


rule table1:
    input:
        references(["teacher"]),
        base_evals(W, SEEDS),
        evals(MAIN, SEEDS),
        runs(MAIN, SEEDS),
        f"{W}/traces/train.json",
        world=f"{W}/world/world.json",
    output:
        table=report(TABLE1, caption="../report/table1.rst", category="Table 1", subcategory="table"),
        timing=report(TABLE1_TIMING, caption="../report/timing.rst", category="Table 1", subcategory="wall time"),
        seeds=TABLE1_SEEDS,
    params:
        **STAGE_PARAMS["report"],
        experiments=",".join(MAIN),
        seeds=",".join(map(str, SEEDS)),
        experiments_dir=EXPERIMENTS_DIR,
    log:
        f"{W}/logs/report/table1.log",
    conda:
        ENV
    shell:
        "python -m dcod report table1 --profile {params.profile} --work {input.world} "
        "--experiment-list {params.experiments} --seeds {params.seeds} --experiments {params.experiments_dir} "
        "--out {output.table} > {log} 2>&1"


rule table2:
    input:
        evals(TABLE2_EXPERIMENTS, ABLATION_SEEDS),
        runs(TABLE2_EXPERIMENTS, ABLATION_SEEDS),
        f"{W}/traces/train.json",
        world=f"{W}/world/world.json",
    output:
        table=report(TABLE2, caption="../report/table2.rst", category="Table 2", subcategory="table"),
        timing=report(TABLE2_TIMING, caption="../report/timing.rst", category="Table 2", subcategory="wall time"),
        seeds=TABLE2_SEEDS,
    params:
        **STAGE_PARAMS["report"],
        experiments=",".join(TABLE2_EXPERIMENTS),
        seeds=",".join(map(str, ABLATION_SEEDS)),
        experiments_dir=EXPERIMENTS_DIR,
    log:
        f"{W}/logs/report/table2.log",
    conda:
        ENV
    shell:
        "python -m dcod report table2 --profile {params.profile} --work {input.world} "
        "--experiment-list {params.experiments} --seeds {params.seeds} --experiments {params.experiments_dir} "
        "--out {output.table} > {log} 2>&1"


rule table3:
    input:
        evals(TABLE3_AGAINST + PRIOR, SEEDS),
        runs(TABLE3_AGAINST + PRIOR, SEEDS),
        f"{W}/traces/train.json",
        PUBLISHED_TABLE3_INPUTS,
        world=f"{W}/world/world.json",
    output:
        table=report(TABLE3, caption="../report/table3.rst", category="Table 3", subcategory="table"),
        markdown=report(f"{R}/table3.md", caption="../report/table3.rst", category="Table 3", subcategory="report"),
        timing=report(TABLE3_TIMING, caption="../report/timing.rst", category="Table 3", subcategory="wall time"),
    params:
        **STAGE_PARAMS["report"],
        experiments=",".join(TABLE3_AGAINST + PRIOR),
        seeds=",".join(map(str, SEEDS)),
        experiments_dir=EXPERIMENTS_DIR,
        published=f"--published {PUBLISHED / 'results'}" if PUBLISHED_TABLE3_INPUTS else "",
    log:
        f"{W}/logs/report/table3.log",
    conda:
        ENV
    shell:
        "python -m dcod report table3 --profile {params.profile} --work {input.world} "
        "--experiment-list {params.experiments} --seeds {params.seeds} --experiments {params.experiments_dir} "
        "{params.published} --out {output.table} > {log} 2>&1"


rule figure_table3:
    input:
        TABLE1_TIMING,
        TABLE3_TIMING,
        table3=TABLE3,
        table1=TABLE1,
    output:
        marker=report(f"{F}/{{name}}.png", caption="../report/figure.rst", category="figures", subcategory="{name}"),
        data=report(f"{F}/{{name}}.csv", caption="../report/figure_data.rst", category="figures", subcategory="{name}"),
    params:
        **STAGE_PARAMS["report"],
        caption=lambda wildcards: figure_caption(wildcards.name),
    log:
        f"{W}/logs/report/figure_{{name}}.log",
    wildcard_constraints:
        name="|".join(TABLE3_FIGURES),
    conda:
        ENV
    shell:
        "python -m dcod report figure:{wildcards.name} --profile {params.profile} --results-dir {input.table1} "
        "--out {output.marker} > {log} 2>&1"


rule figure:
    input:
        references(["teacher"]),
        base_evals(W, SEEDS),
        evals(MAIN, SEEDS),
        runs(MAIN, SEEDS),
        TABLE1_TIMING,
        world=f"{W}/world/world.json",
        table1=TABLE1,
    output:
        marker=report(f"{F}/{{name}}.png", caption="../report/figure.rst", category="figures", subcategory="{name}"),
        data=report(f"{F}/{{name}}.csv", caption="../report/figure_data.rst", category="figures", subcategory="{name}"),
    params:
        **STAGE_PARAMS["report"],
        experiments=",".join(MAIN),
        seeds=",".join(map(str, SEEDS)),
        caption=lambda wildcards: figure_caption(wildcards.name),
    log:
        f"{W}/logs/report/figure_{{name}}.log",
    wildcard_constraints:
        name="|".join(n for n in FIGURE_NAMES if n not in TABLE3_FIGURES),
    conda:
        ENV
    shell:
        "python -m dcod report figure:{wildcards.name} --profile {params.profile} --work {input.world} "
        "--experiment-list {params.experiments} --seeds {params.seeds} --results-dir {input.table1} "
        "--out {output.marker} > {log} 2>&1"


rule claims:
    # the verdicts of docs/claims.md on Table 1 (and Table 3 for claim (a)), judged once: the report reads them
    input:
        TABLE3,
        table1=TABLE1,
        table2=TABLE2,  # the DCOD reading chosen on validation (docs/claims.md) from Table 2's seeds
        table2_seeds=TABLE2_SEEDS,
    output:
        CLAIMS,
    params:
        **STAGE_PARAMS["report"],
    log:
        f"{W}/logs/report/claims.log",
    conda:
        ENV
    shell:
        "python -m dcod report claims --profile {params.profile} --results-dir {input.table1} --out {output} > {log} 2>&1"


rule claims_table1:
    # the same rules on Table 1 alone: the comparisons with the snapshot and the float-path rerun read these,
    # so that `make reproduce`'s comparison never waits for Table 3's runs
    input:
        table1=TABLE1,
    output:
        CLAIMS_TABLE1,
    params:
        **STAGE_PARAMS["report"],
    log:
        f"{W}/logs/report/claims_table1.log",
    conda:
        ENV
    shell:
        "python -m dcod report claims_table1 --profile {params.profile} --results-dir {input.table1} --out {output} "
        "> {log} 2>&1"


rule report:
    input:
        TABLE2,
        TABLE3,
        TABLE3_TIMING,
        CLAIMS,
        TABLE1_TIMING,
        TABLE2_TIMING,
        TUNING_TARGETS,
        CALIBRATION,
        FIGURES,
        ROBUSTNESS_TARGETS,
        FLOAT_PATH_TARGETS,
        table1=TABLE1,
        figure=FIGURES[0],
    output:
        report(REPORT, caption="../report/report.rst", category="traces", subcategory="generated report"),
    params:
        **STAGE_PARAMS["report"],
    log:
        f"{W}/logs/report/report.log",
    conda:
        ENV
    shell:
        "python -m dcod report paper --profile {params.profile} --results-dir {input.table1} "
        "--figures-dir {input.figure} --out {output} > {log} 2>&1"


rule compare:
    # a fresh Table 1 against the published snapshot: per-method differences, claim verdicts
    input:
        table1=TABLE1,
        timing=TABLE1_TIMING,
        claims=CLAIMS_TABLE1,
        published=PUBLISHED_TABLE1,
    output:
        markdown=report(f"{R}/comparison.md", caption="../report/comparison.rst", category="Table 1", subcategory="against the published snapshot"),
        data=report(f"{R}/comparison.csv", caption="../report/comparison.rst", category="Table 1", subcategory="against the published snapshot"),
    params:
        **STAGE_PARAMS["report"],
    log:
        f"{W}/logs/report/compare.log",
    conda:
        ENV
    shell:
        "python -m dcod report compare --results-dir {input.table1} --published {input.published} "
        "--out {output.markdown} > {log} 2>&1"


# ------------------------------------------------------------------ robustness worlds
rule robustness:
    input:
        [f"{root}/eval/{e}/seed{s}/{f}" for root in ROBUST_WORLDS.values() for e in ROBUST_EXPERIMENTS
         for s in ROBUST_SEEDS for f in EVAL_FILES],
        [f"{root}/eval/{r}/{f}" for root in ROBUST_WORLDS.values()
         for r in ["base_student", "teacher_direct", "teacher_decomposed"] for f in EVAL_FILES],
        [f"{root}/world/world.json" for root in ROBUST_WORLDS.values()],
        [f"{root}/traces/train.json" for root in ROBUST_WORLDS.values()],
        # the teacher-term target of every world: its training traces, scored by its world seed's base student
        [f"{root}/traces/train.parquet" for root in ROBUST_WORLDS.values()],
        sorted({ROOTS.base(root) for root in ROBUST_WORLDS.values()}),
        CALIBRATION_EVALS,  # the main world's knife-edge and plateau lines
        knife_edge_evals(KNIFE_EDGE_SEEDS),  # every world seed's knife-edge base students
    output:
        table=report(ROBUSTNESS, caption="../report/robustness.rst", category="robustness", subcategory="table"),
        markdown=report(f"{R}/robustness.md", caption="../report/robustness.rst", category="robustness", subcategory="report"),
    params:
        **STAGE_PARAMS["report"],
        worlds=",".join(f"{name}={root}/world/world.json" for name, root in ROBUST_WORLDS.items()),
        experiments=",".join(ROBUST_EXPERIMENTS),
    log:
        f"{W}/logs/report/robustness.log",
    conda:
        ENV
    shell:
        "python -m dcod report robustness --profile {params.profile} --worlds {params.worlds} "
        "--experiment-list {params.experiments} --out {output.table} > {log} 2>&1"


rule figure_robustness:
    input:
        table=ROBUSTNESS,
    output:
        marker=report(f"{F}/robustness.png", caption="../report/figure.rst", category="robustness", subcategory="figure"),
        data=report(f"{F}/robustness.csv", caption="../report/figure_data.rst", category="robustness", subcategory="figure"),
    params:
        **STAGE_PARAMS["report"],
        caption=lambda wildcards: figure_caption("robustness"),
    log:
        f"{W}/logs/report/figure_robustness.log",
    conda:
        ENV
    shell:
        "python -m dcod report figure:robustness --profile {params.profile} --results-dir {input.table} "
        "--out {output.marker} > {log} 2>&1"


# ------------------------------------------------------------------ the float-path check
# Table 1 once more, every model retrained and re-evaluated under other CPU kernels (same machine, same
# world), then compared with the main Table 1: per-method differences and whether every verdict agrees.
rule table1_float_path:
    input:
        [f"{FLOAT_ROOT}/eval/teacher/{f}" for f in EVAL_FILES],
        base_evals(FLOAT_ROOT, SEEDS),
        [f"{FLOAT_ROOT}/eval/{e}/seed{s}/{f}" for e in MAIN for s in SEEDS for f in EVAL_FILES],
        [f"{FLOAT_ROOT}/runs/{e}/seed{s}/{f}" for e in MAIN for s in SEEDS for f in RUN_FILES],
        f"{FLOAT_ROOT}/traces/train.json",
        world=f"{FLOAT_ROOT}/world/world.json",
    output:
        table=report(f"{FLOAT_RESULTS}/table1.csv", caption="../report/float_path_table1.rst", category="float path", subcategory="Table 1 under other kernels"),
        timing=report(f"{FLOAT_RESULTS}/table1_timing.csv", caption="../report/timing.rst", category="float path", subcategory="Table 1 under other kernels"),
        seeds=f"{FLOAT_RESULTS}/table1_seeds.csv",
    params:
        **STAGE_PARAMS["report"],
        experiments=",".join(MAIN),
        seeds=",".join(map(str, SEEDS)),
        experiments_dir=EXPERIMENTS_DIR,
    log:
        f"{W}/logs/report/table1_float_path.log",
    conda:
        ENV
    shell:
        "python -m dcod report table1 --profile {params.profile} --work {input.world} "
        "--experiment-list {params.experiments} --seeds {params.seeds} --experiments {params.experiments_dir} "
        "--out {output.table} > {log} 2>&1"


rule float_path_compare:
    input:
        table1=TABLE1,
        timing=TABLE1_TIMING,
        claims=CLAIMS_TABLE1,
        other=f"{FLOAT_RESULTS}/table1.csv",
    output:
        markdown=report(f"{R}/float_path.md", caption="../report/float_path.rst", category="float path", subcategory="comparison"),
        data=report(f"{R}/float_path.csv", caption="../report/float_path.rst", category="float path", subcategory="comparison"),
    params:
        **STAGE_PARAMS["report"],
    log:
        f"{W}/logs/report/float_path_compare.log",
    conda:
        ENV
    shell:
        "python -m dcod report compare --results-dir {input.table1} --published {input.other} "
        "--out {output.markdown} > {log} 2>&1"


# make all (base_students=rebuild) with a profile that ships its base students: every one rebuilt from scratch,
# checked against the shipped one by accuracy (dcod.reporting.base_students; docs/reproducibility.md).
if BASE_STUDENTS_CHECK:

    rule base_students_check:
        input:
            # the rebuilt base students and the evaluations Table 1 reads (what an export records)
            [str(base_student_dir(W, P, seed)) for seed in shipped_seeds(P)],
            [str(base_student_metrics(W, seed)) for seed in shipped_seeds(P).values()],
            manifest=SHIPPED_MANIFEST,
            world=f"{W}/world/world.json",
        output:
            table=report(BASE_STUDENTS_CHECK[0], caption="../report/base_students.rst", category="calibration",
                         subcategory="shipped base students"),
            markdown=BASE_STUDENTS_CHECK[1],
        params:
            **STAGE_PARAMS["report"],
        log:
            f"{W}/logs/report/base_students.log",
        conda:
            ENV
        shell:
            "python -m dcod report base_students --profile {params.profile} --work {input.world} "
            "--manifest {input.manifest} --out {output.table} > {log} 2>&1"
