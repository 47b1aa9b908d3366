"""Screen a toy world's teacher-term target cheaply (docs/toy_world.md, "Calibration of the next world").

    python bench/teacher_term.py --profile config/profiles/toy_next.yaml [--set teacher.p_direct=0.5 ...]
        [--prompts 600] [--base <base student folder>]

Writes the profile's world to a temporary folder (``stage_world``), loads its teacher as the traces stage does
(``load_teacher``), samples it once on each of the first ``--prompts`` training prompts at the profile's trace
temperature and seed, keeps the traces whose completion ends in the gold ``\\boxed{}`` (the traces stage grades
with math-verify; for the toy world's integer golds both keep the same traces), and prints the standard deviation
of the teacher's per-trace mean log-prob over completion tokens (eos included, as stored with the traces). With
``--base`` it also scores the kept traces under that base student and prints the target's line
(``dcod.reporting.calibration.teacher_term_target``). The base student must be pre-trained on the same world
settings (the teacher's knobs do not change the pre-training split). The report's own line
(``teacher_term_from_files``) reads the traces stage's output over all training prompts: use this to screen a
design in seconds before training a base student.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--base", type=Path, help="a base student folder: also print the target's line")
    args = parser.parse_args(argv)

    import torch

    from dcod.backends import load_teacher
    from dcod.config import load_profile
    from dcod.generation import SamplingParams
    from dcod.io import read_jsonl
    from dcod.models import encode_prompt
    from dcod.pipeline import stage_world
    from dcod.reporting.calibration import student_trace_logprobs, teacher_term_target

    torch.set_num_threads(1)
    profile = load_profile(args.profile, args.overrides)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        stage_world(profile, Path(tmp))
        teacher, tokenizer = load_teacher(profile, Path(tmp))
        records = read_jsonl(Path(tmp) / "train.jsonl")[:args.prompts]
    params = SamplingParams(max_new_tokens=profile.traces.max_new_tokens, temperature=profile.traces.temperature,
                            n=1, seed=profile.traces.seed)
    generations = teacher.generate([encode_prompt(tokenizer, r["question"]) for r in records], params)
    kept = [g for g, r in zip(generations, records)
            if g.finish_reason == "stop" and g.text.endswith("\\boxed{" + r["gold"] + "}")]
    teacher_means = np.array([np.mean(g.logprobs) for g in kept])
    out = {"prompts": len(records), "kept": len(kept), "teacher_std": round(float(teacher_means.std()), 4),
           "teacher_mean": round(float(teacher_means.mean()), 4)}
    if args.base is not None:
        examples = [{"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids} for g in kept]
        student = np.array([np.mean(lps) for lps in student_trace_logprobs(args.base, examples)])
        target = teacher_term_target(teacher_means, student)
        out.update(student_std=round(float(student.std()), 4), status=target.status,
                   ratio=round(target.numbers.get("teacher_term_spread_ratio", float("nan")), 3),
                   r=round(target.numbers.get("teacher_term_corr", float("nan")), 3))
    out["seconds"] = round(time.time() - started, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
