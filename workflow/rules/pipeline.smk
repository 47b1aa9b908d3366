# Data, models and runs. Every rule: inputs include the profile file (a change reruns it), one
# `python -m dcod` subcommand, a log. The conda directive names the one pinned environment.


rule world:
    input:
        profile=PROFILE_FILE,
    output:
        f"{W}/world/world.json",
    log:
        f"{W}/logs/world.log",
    conda:
        ENV
    shell:
        "python -m dcod world --profile {input.profile} --out {output} > {log} 2>&1"


rule base_student:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
    output:
        directory(f"{W}/base_student"),
    log:
        f"{W}/logs/base_student.log",
    conda:
        ENV
    shell:
        "python -m dcod base-student --profile {input.profile} --world {input.world} --out {output} > {log} 2>&1"


rule traces:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
    output:
        marker=f"{W}/traces/train.parquet",
        summary=f"{W}/traces/train.json",
    log:
        f"{W}/logs/traces.log",
    conda:
        ENV
    shell:
        "python -m dcod traces --profile {input.profile} --world {input.world} --out {output.marker} > {log} 2>&1"


rule train:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        base=f"{W}/base_student",
        traces=f"{W}/traces/train.parquet",
        config=EXPERIMENTS_DIR / "{experiment}" / "config.yaml",
        bases=experiment_bases,  # the configs it inherits from (base:)
    output:
        marker=f"{W}/runs/{{experiment}}/seed{{seed}}/run.json",
        train_log=f"{W}/runs/{{experiment}}/seed{{seed}}/train_log.jsonl",
    params:
        launcher=train_launcher,  # python, or accelerate launch with the profile's accelerate config
    resources:
        gpu=train_gpus,  # read by cluster executors (Slurm: --gpus); unconstrained in local runs
    log:
        f"{W}/logs/train/{{experiment}}_seed{{seed}}.log",
    conda:
        ENV
    shell:
        "{params.launcher} -m dcod train --profile {input.profile} --experiment {input.config} "
        "--seed {wildcards.seed} --world {input.world} "
        "--base {input.base} --traces {input.traces} --out {output.marker} > {log} 2>&1"


rule evaluate:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        run=f"{W}/runs/{{experiment}}/seed{{seed}}/run.json",
    output:
        marker=f"{W}/eval/{{experiment}}/seed{{seed}}/metrics.csv",
        samples=f"{W}/eval/{{experiment}}/seed{{seed}}/samples.jsonl",
        stability=f"{W}/eval/{{experiment}}/seed{{seed}}/stability.csv",
    log:
        f"{W}/logs/eval/{{experiment}}_seed{{seed}}.log",
    conda:
        ENV
    shell:
        "python -m dcod evaluate --profile {input.profile} --world {input.world} --seed {wildcards.seed} "
        "--model {input.run} --out {output.marker} > {log} 2>&1"


rule evaluate_reference:
    # the base student, the teacher, and the teacher forced to one style (calibration)
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        base=f"{W}/base_student",
    output:
        marker=f"{W}/eval/{{reference}}/metrics.csv",
        samples=f"{W}/eval/{{reference}}/samples.jsonl",
        stability=f"{W}/eval/{{reference}}/stability.csv",
    log:
        f"{W}/logs/eval/{{reference}}.log",
    wildcard_constraints:
        reference="|".join(REFERENCES),
    conda:
        ENV
    shell:
        "python -m dcod evaluate --profile {input.profile} --world {input.world} --model {wildcards.reference} --base {input.base} "
        "--out {output.marker} > {log} 2>&1"


# ------------------------------------------------------------------ tuning: same budget for every method
# Each Table 1 method is trained with every learning rate of the profile's tuning grid (one seed) and
# scored on the validation split only; results/tuning.csv records the grid and the best value.


# The experiment config is a param, not an input: writing the chosen learning rate into it must not
# make the grid stale. `tuned_settings` (the config without train.lr) is compared by Snakemake's
# params trigger, so a change to any other knob of the method still reruns its grid.
rule tune_train:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        base=f"{W}/base_student",
        traces=f"{W}/traces/train.parquet",
    output:
        marker=f"{W}/tuning/{{experiment}}/lr{{lr}}/run.json",
        train_log=f"{W}/tuning/{{experiment}}/lr{{lr}}/train_log.jsonl",
    params:
        config=lambda wildcards: EXPERIMENTS_DIR / wildcards.experiment / "config.yaml",
        tuned_settings=lambda wildcards: settings_without_lr(wildcards.experiment),
        seed=TUNING_SEED,
        launcher=train_launcher,
    resources:
        gpu=train_gpus,
    log:
        f"{W}/logs/tuning/{{experiment}}_lr{{lr}}.log",
    conda:
        ENV
    shell:
        "{params.launcher} -m dcod train --profile {input.profile} --experiment {params.config} --lr {wildcards.lr} "
        "--seed {params.seed} --world {input.world} --base {input.base} --traces {input.traces} "
        "--out {output.marker} > {log} 2>&1"


rule tune_evaluate:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        run=f"{W}/tuning/{{experiment}}/lr{{lr}}/run.json",
    output:
        marker=f"{W}/tuning/{{experiment}}/lr{{lr}}/eval/metrics.csv",
        samples=f"{W}/tuning/{{experiment}}/lr{{lr}}/eval/samples.jsonl",
        stability=f"{W}/tuning/{{experiment}}/lr{{lr}}/eval/stability.csv",
    params:
        seed=TUNING_SEED,
        split=TUNING_SPLIT,
    log:
        f"{W}/logs/tuning/{{experiment}}_lr{{lr}}_eval.log",
    conda:
        ENV
    shell:
        "python -m dcod evaluate --profile {input.profile} --world {input.world} --seed {params.seed} "
        "--model {input.run} --splits {params.split} --out {output.marker} > {log} 2>&1"
