# Which rules a cluster executor runs on the submitting (login) node instead of submitting them
# (docs/paper_setting.md, "Slurm resources, memory and FSDP2"): the report rules only read CSV/JSON files
# and draw figures (seconds, no GPU), and `world` downloads the benchmarks from the hub, which compute
# nodes often cannot reach. Local runs (`snakemake --cores N`) ignore this directive.
# tests/workflow/test_slurm.py checks that every report rule is listed here.

localrules:
    world,
    calibration,
    table1,
    table2,
    table3,
    figure,
    figure_table3,
    report,
    tuning,
    tuning_choice,
    compare,
    claims,
    claims_table1,
    robustness,
    figure_robustness,
    table1_float_path,
    float_path_compare,
