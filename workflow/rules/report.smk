# Tables, calibration, figures and the generated report: one rule (and one script) each.
# --work gets the world marker (work/<profile>/world/world.json) and --results-dir / --figures-dir a file
# inside the folder, so every path the command uses is derived from a declared input.


rule calibration:
    input:
        references(REFERENCES),
        evals([BASELINE] if BASELINE in MAIN else [], SEEDS),
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
    output:
        marker=f"{R}/calibration.csv",
        markdown=f"{R}/calibration.md",
    params:
        seeds=",".join(map(str, SEEDS)),
    log:
        f"{W}/logs/report/calibration.log",
    conda:
        ENV
    shell:
        "python -m dcod report calibration --profile {input.profile} --work {input.world} "
        "--seeds {params.seeds} --out {output.marker} > {log} 2>&1"


rule table1:
    input:
        references(["teacher", "base_student"]),
        evals(MAIN, SEEDS),
        runs(MAIN, SEEDS),
        f"{W}/traces/train.json",
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
    output:
        table=TABLE1,
        timing=TABLE1_TIMING,
    params:
        experiments=",".join(MAIN),
        seeds=",".join(map(str, SEEDS)),
        experiments_dir=EXPERIMENTS_DIR,
    log:
        f"{W}/logs/report/table1.log",
    conda:
        ENV
    shell:
        "python -m dcod report table1 --profile {input.profile} --work {input.world} "
        "--experiment-list {params.experiments} --seeds {params.seeds} --experiments {params.experiments_dir} "
        "--out {output.table} > {log} 2>&1"


rule table2:
    input:
        evals(TABLE2_EXPERIMENTS, ABLATION_SEEDS),
        runs(TABLE2_EXPERIMENTS, ABLATION_SEEDS),
        f"{W}/traces/train.json",
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
    output:
        table=TABLE2,
        timing=TABLE2_TIMING,
    params:
        experiments=",".join(TABLE2_EXPERIMENTS),
        seeds=",".join(map(str, ABLATION_SEEDS)),
        experiments_dir=EXPERIMENTS_DIR,
    log:
        f"{W}/logs/report/table2.log",
    conda:
        ENV
    shell:
        "python -m dcod report table2 --profile {input.profile} --work {input.world} "
        "--experiment-list {params.experiments} --seeds {params.seeds} --experiments {params.experiments_dir} "
        "--out {output.table} > {log} 2>&1"


rule figure:
    input:
        references(["teacher", "base_student"]),
        evals(MAIN, SEEDS),
        runs(MAIN, SEEDS),
        TABLE1_TIMING,
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        table1=TABLE1,
    output:
        marker=f"{F}/{{name}}.png",
        data=f"{F}/{{name}}.csv",
    params:
        experiments=",".join(MAIN),
        seeds=",".join(map(str, SEEDS)),
    log:
        f"{W}/logs/report/figure_{{name}}.log",
    wildcard_constraints:
        name="|".join(FIGURE_NAMES),
    conda:
        ENV
    shell:
        "python -m dcod report figure:{wildcards.name} --profile {input.profile} --work {input.world} "
        "--experiment-list {params.experiments} --seeds {params.seeds} --results-dir {input.table1} "
        "--out {output.marker} > {log} 2>&1"


rule report:
    input:
        TABLE2,
        TABLE1_TIMING,
        TABLE2_TIMING,
        TUNING_TARGETS,
        CALIBRATION,
        FIGURES,
        table1=TABLE1,
        figure=FIGURES[0],
        profile=PROFILE_FILE,
    output:
        REPORT,
    log:
        f"{W}/logs/report/report.log",
    conda:
        ENV
    shell:
        "python -m dcod report paper --profile {input.profile} --results-dir {input.table1} "
        "--figures-dir {input.figure} --out {output} > {log} 2>&1"


rule tuning:
    input:
        tuning_evals(MAIN),
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
    output:
        TUNING,
    params:
        experiments=",".join(MAIN),
    log:
        f"{W}/logs/report/tuning.log",
    conda:
        ENV
    shell:
        "python -m dcod report tuning --profile {input.profile} --work {input.world} "
        "--experiment-list {params.experiments} --out {output} > {log} 2>&1"


rule compare:
    # a fresh Table 1 against the published snapshot: per-method differences, claim verdicts
    input:
        table1=TABLE1,
        timing=TABLE1_TIMING,
        published=PUBLISHED_TABLE1,
    output:
        markdown=f"{R}/comparison.md",
        data=f"{R}/comparison.csv",
    log:
        f"{W}/logs/report/compare.log",
    conda:
        ENV
    shell:
        "python -m dcod report compare --results-dir {input.table1} --published {input.published} "
        "--out {output.markdown} > {log} 2>&1"
