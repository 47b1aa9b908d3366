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
    threads: 2
    conda:
        ENV
    shell:
        "python -m dcod base-student --profile {input.profile} --world {input.world} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule traces:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
    output:
        f"{W}/traces/train.parquet",
        f"{W}/traces/train.json",
    log:
        f"{W}/logs/traces.log",
    conda:
        ENV
    shell:
        "python -m dcod traces --profile {input.profile} --world {input.world} --out {output[0]} > {log} 2>&1"


rule train:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        base=f"{W}/base_student",
        traces=f"{W}/traces/train.parquet",
        config=EXPERIMENTS_DIR / "{experiment}" / "config.yaml",
    output:
        f"{W}/runs/{{experiment}}/seed{{seed}}/run.json",
        f"{W}/runs/{{experiment}}/seed{{seed}}/train_log.jsonl",
    log:
        f"{W}/logs/train/{{experiment}}_seed{{seed}}.log",
    conda:
        ENV
    shell:
        "python -m dcod train --profile {input.profile} --experiment {input.config} "
        "--seed {wildcards.seed} --world {input.world} "
        "--base {input.base} --traces {input.traces} --out {output[0]} > {log} 2>&1"


rule evaluate:
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        run=f"{W}/runs/{{experiment}}/seed{{seed}}/run.json",
    output:
        expand(f"{W}/eval/{{{{experiment}}}}/seed{{{{seed}}}}/{{file}}", file=EVAL_FILES),
    log:
        f"{W}/logs/eval/{{experiment}}_seed{{seed}}.log",
    conda:
        ENV
    shell:
        "python -m dcod evaluate --profile {input.profile} --world {input.world} --seed {wildcards.seed} "
        "--model {input.run} --out {output[0]} > {log} 2>&1"


rule evaluate_reference:
    # the base student, the teacher, and the teacher forced to one style (calibration)
    input:
        profile=PROFILE_FILE,
        world=f"{W}/world/world.json",
        base=f"{W}/base_student",
    output:
        expand(f"{W}/eval/{{{{reference}}}}/{{file}}", file=EVAL_FILES),
    log:
        f"{W}/logs/eval/{{reference}}.log",
    wildcard_constraints:
        reference="|".join(REFERENCES),
    conda:
        ENV
    shell:
        "python -m dcod evaluate --profile {input.profile} --world {input.world} --model {wildcards.reference} --base {input.base} "
        "--out {output[0]} > {log} 2>&1"
