# Data, models and runs. Every rule: one `python -m dcod` subcommand, a log, and as params the fingerprints
# of what it reads besides its input files: the code of its stage and the profile sections it reads
# (common.smk, STAGE_PARAMS), so a source or profile edit reruns the jobs it can change and no other.
# The profile file itself is a param, not an input (a train-only edit must not redo the world). The conda directive
# names the one pinned environment.
# Rules are written for a {root} (workflow/rules/common.smk): the main work folder or one of its variants
# (robustness worlds, calibration base students, the float-path check), whose commands get the variant's
# profile overrides (--set) and environment.


rule world:
    input:
    output:
        f"{{root}}/world/world.json",
    params:
        **STAGE_PARAMS["prepare"],
        sets=root_sets,
        env=root_env,
    log:
        "{root}/logs/world.log",
    conda:
        ENV
    shell:
        "{params.env}python -m dcod world --profile {params.profile} {params.sets} --out {output} > {log} 2>&1"


rule base_student:
    input:
        world=root_world,
    output:
        directory("{root}/base_student"),
    params:
        **STAGE_PARAMS["prepare"],
        sets=root_sets,
        env=root_env,
    threads: P.pretrain.threads or P.threads
    log:
        "{root}/logs/base_student.log",
    conda:
        ENV
    shell:
        "{params.env}python -m dcod base-student --profile {params.profile} {params.sets} --world {input.world} "
        "--out {output} > {log} 2>&1"


# A shipped base student (common.smk, SHIPPED_ROOTS): its files checked against the manifest and copied, in
# place of the pre-training; a stage group of its own (dcod.provenance, STAGE_CODE["shipped"]).
if SHIPPED_ROOTS:

    rule base_student_shipped:
        input:
            shipped_files,
            world=root_world,
        output:
            directory("{root}/base_student"),
        params:
            **STAGE_PARAMS["shipped"],
            sets=root_sets,
            env=root_env,
            shipped=shipped_folder,
        log:
            "{root}/logs/base_student.log",
        wildcard_constraints:
            root="|".join(re.escape(r) for r in SHIPPED_ROOTS),
        conda:
            ENV
        shell:
            "{params.env}python -m dcod base-student --profile {params.profile} {params.sets} --world {input.world} "
            "--shipped {params.shipped} --out {output} > {log} 2>&1"

    ruleorder: base_student_shipped > base_student


rule traces:
    input:
        world=root_world,
    output:
        marker="{root}/traces/train.parquet",
        summary="{root}/traces/train.json",
    params:
        **STAGE_PARAMS["prepare"],
        sets=root_sets,
        env=root_env,
    log:
        "{root}/logs/traces.log",
    conda:
        ENV
    shell:
        "{params.env}python -m dcod traces --profile {params.profile} {params.sets} --world {input.world} "
        "--out {output.marker} > {log} 2>&1"


rule traces_student_style:
    # the teacher forced to the student's native (decomposed) style: the oracle reference's traces
    input:
        world=root_world,
    output:
        marker="{root}/traces_student_style/train.parquet",
        summary="{root}/traces_student_style/train.json",
    params:
        **STAGE_PARAMS["prepare"],
        sets=root_sets,
        env=root_env,
    log:
        "{root}/logs/traces_student_style.log",
    conda:
        ENV
    shell:
        "{params.env}python -m dcod traces --profile {params.profile} {params.sets} --set teacher.p_direct=0 "
        "--world {input.world} --out {output.marker} > {log} 2>&1"


# Offline student passes (docs/architecture.md): once per seed, over that seed's base student, for the methods
# that declare them (common.smk, run_passes).
rule student_traces:
    input:
        world=root_world,
        base=seed_base,
        traces="{root}/traces/train.parquet",
    output:
        marker="{root}/student_traces/seed{seed}/train.parquet",
        summary="{root}/student_traces/seed{seed}/train.json",
    params:
        **STAGE_PARAMS["prepare"],
        sets=root_sets,
        env=root_env,
    log:
        "{root}/logs/student_traces_seed{seed}.log",
    conda:
        ENV
    shell:
        "{params.env}python -m dcod student-traces --profile {params.profile} {params.sets} --world {input.world} "
        "--base {input.base} --traces {input.traces} --seed {wildcards.seed} --out {output.marker} > {log} 2>&1"


rule trace_scores:
    input:
        base=seed_base,
        traces="{root}/traces/train.parquet",
    output:
        marker="{root}/trace_scores/seed{seed}/train.parquet",
        summary="{root}/trace_scores/seed{seed}/train.json",
    params:
        **STAGE_PARAMS["prepare"],
        sets=root_sets,
        env=root_env,
    log:
        "{root}/logs/trace_scores_seed{seed}.log",
    conda:
        ENV
    shell:
        "{params.env}python -m dcod score-traces --profile {params.profile} {params.sets} --base {input.base} "
        "--traces {input.traces} --out {output.marker} > {log} 2>&1"


rule train:
    input:
        world=root_world,
        base=seed_base,  # the root's base student, or under pretrain.per_seed the seed's own
        traces=root_traces,
        config=EXPERIMENTS_DIR / "{experiment}" / "config.yaml",
        bases=experiment_bases,  # the configs it inherits from (base:)
        lr_table=lr_table,  # the profile's tuning results when its learning rates come from them
        passes=lambda wildcards: list(run_passes(wildcards).values()),  # its method's offline student passes
    output:
        marker="{root}/runs/{experiment}/seed{seed}/run.json",
        train_log="{root}/runs/{experiment}/seed{seed}/train_log.jsonl",
    params:
        **STAGE_PARAMS["train"],
        launcher=train_launcher,  # python, or accelerate launch with the profile's accelerate config
        sets=root_sets,
        env=root_env,
        lr_option=lr_option,
        pass_options=lambda wildcards: pass_option(run_passes(wildcards)),
    resources:
        gpu=train_gpus,  # read by cluster executors (Slurm: --gpus); unconstrained in local runs
    log:
        "{root}/logs/train/{experiment}_seed{seed}.log",
    conda:
        ENV
    shell:
        "{params.env}{params.launcher} -m dcod train --profile {params.profile} {params.sets} "
        "--experiment {input.config} --seed {wildcards.seed} --world {input.world} "
        "--base {input.base} --traces {input.traces} {params.lr_option} {params.pass_options} --out {output.marker} "
        "> {log} 2>&1"


rule evaluate:
    input:
        world=root_world,
        run="{root}/runs/{experiment}/seed{seed}/run.json",
    output:
        marker="{root}/eval/{experiment}/seed{seed}/metrics.csv",
        samples="{root}/eval/{experiment}/seed{seed}/samples.jsonl",
        stability="{root}/eval/{experiment}/seed{seed}/stability.csv",
    params:
        **STAGE_PARAMS["evaluate"],
        sets=root_sets,
        env=root_env,
        options=root_eval_options,
    log:
        "{root}/logs/eval/{experiment}_seed{seed}.log",
    conda:
        ENV
    shell:
        "{params.env}python -m dcod evaluate --profile {params.profile} {params.sets} {params.options} "
        "--world {input.world} --seed {wildcards.seed} --model {input.run} --out {output.marker} > {log} 2>&1"


rule evaluate_reference:
    # the base student, the teacher, and the teacher forced to one style (calibration)
    input:
        world=root_world,
        base=root_base,
    output:
        marker="{root}/eval/{reference}/metrics.csv",
        samples="{root}/eval/{reference}/samples.jsonl",
        stability="{root}/eval/{reference}/stability.csv",
    params:
        **STAGE_PARAMS["evaluate"],
        sets=root_sets,
        env=root_env,
        options=root_eval_options,
    log:
        "{root}/logs/eval/{reference}.log",
    wildcard_constraints:
        reference="|".join(REFERENCES),
    conda:
        ENV
    shell:
        "{params.env}python -m dcod evaluate --profile {params.profile} {params.sets} {params.options} "
        "--world {input.world} --model {wildcards.reference} --base {input.base} --out {output.marker} > {log} 2>&1"


rule evaluate_base_seed:
    # under pretrain.per_seed: the base student that seed's runs start from, evaluated like a run of that
    # seed (Table 1's base-student row then has one evaluation per seed)
    input:
        world=root_world,
        base=seed_base,
    output:
        marker="{root}/eval/base_student/seed{seed}/metrics.csv",
        samples="{root}/eval/base_student/seed{seed}/samples.jsonl",
        stability="{root}/eval/base_student/seed{seed}/stability.csv",
    params:
        **STAGE_PARAMS["evaluate"],
        sets=root_sets,
        env=root_env,
        options=root_eval_options,
    log:
        "{root}/logs/eval/base_student_seed{seed}.log",
    conda:
        ENV
    shell:
        "{params.env}python -m dcod evaluate --profile {params.profile} {params.sets} {params.options} "
        "--world {input.world} --seed {wildcards.seed} --model base_student --base {input.base} "
        "--out {output.marker} > {log} 2>&1"


ruleorder: evaluate_base_seed > evaluate


# ------------------------------------------------------------------ tuning: same budget for every method
# Each Table 1 method is trained with every learning rate of the profile's tuning grid (one seed) and
# scored on the validation split only; results/tuning.csv records the grid and the best value.


# The experiment config is a param, not an input: writing the chosen learning rate into it must not
# make the grid stale. `tuned_settings` (the config without train.lr) is compared by Snakemake's
# params trigger, so a change to any other knob of the method still reruns its grid.
rule tune_train:
    input:
        world=f"{W}/world/world.json",
        base=f"{W}/base_student",
        traces=lambda wildcards: f"{W}/{traces_of(wildcards.experiment)}/train.parquet",
        passes=lambda wildcards: list(tuning_passes(wildcards).values()),
    output:
        marker=f"{W}/tuning/{{experiment}}/lr{{lr}}/run.json",
        train_log=f"{W}/tuning/{{experiment}}/lr{{lr}}/train_log.jsonl",
    params:
        **STAGE_PARAMS["train"],
        config=lambda wildcards: EXPERIMENTS_DIR / wildcards.experiment / "config.yaml",
        tuned_settings=lambda wildcards: settings_without_lr(wildcards.experiment),
        seed=TUNING_SEED,
        launcher=train_launcher,
        pass_options=lambda wildcards: pass_option(tuning_passes(wildcards)),
    resources:
        gpu=train_gpus,
    log:
        f"{W}/logs/tuning/{{experiment}}_lr{{lr}}.log",
    conda:
        ENV
    shell:
        "{params.launcher} -m dcod train --profile {params.profile} --experiment {params.config} --lr {wildcards.lr} "
        "--seed {params.seed} --world {input.world} --base {input.base} --traces {input.traces} "
        "{params.pass_options} --out {output.marker} > {log} 2>&1"


rule tune_evaluate:
    input:
        world=f"{W}/world/world.json",
        run=f"{W}/tuning/{{experiment}}/lr{{lr}}/run.json",
    output:
        marker=f"{W}/tuning/{{experiment}}/lr{{lr}}/eval/metrics.csv",
        samples=f"{W}/tuning/{{experiment}}/lr{{lr}}/eval/samples.jsonl",
        stability=f"{W}/tuning/{{experiment}}/lr{{lr}}/eval/stability.csv",
    params:
        **STAGE_PARAMS["evaluate"],
        seed=TUNING_SEED,
        split=TUNING_SPLIT,
    log:
        f"{W}/logs/tuning/{{experiment}}_lr{{lr}}_eval.log",
    conda:
        ENV
    shell:
        "python -m dcod evaluate --profile {params.profile} --world {input.world} --seed {params.seed} "
        "--model {input.run} --splits {params.split} --out {output.marker} > {log} 2>&1"


# One experiment's grid choice: what its training (and its ablations') reads when its rate is tuned here.
rule tuning_choice:
    input:
        experiment_tuning_evals,
        world=f"{W}/world/world.json",
    output:
        TUNING_CHOICE,
    params:
        **STAGE_PARAMS["train"],
    log:
        f"{W}/logs/tuning/{{experiment}}_choice.log",
    conda:
        ENV
    shell:
        "python -m dcod tuning --profile {params.profile} --work {input.world} "
        "--experiment-list {wildcards.experiment} --out {output} > {log} 2>&1"


# The grid's choices of every tuned experiment, in one table (the report shows the grid).
rule tuning:
    input:
        tuning_evals(TUNED),
        world=f"{W}/world/world.json",
    output:
        report(TUNING, caption="../report/tuning.rst", category="Table 1", subcategory="tuning"),
    params:
        **STAGE_PARAMS["train"],
        experiments=",".join(TUNED),
    log:
        f"{W}/logs/report/tuning.log",
    conda:
        ENV
    shell:
        "python -m dcod tuning --profile {params.profile} --work {input.world} "
        "--experiment-list {params.experiments} --out {output} > {log} 2>&1"
