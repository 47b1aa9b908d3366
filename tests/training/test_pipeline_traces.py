"""Stored teacher traces: their log-probs equal a fresh teacher pass at the sampling temperature."""

import pandas as pd
import pytest
import torch

from dcod.config import load_profile
from dcod.pipeline import stage_traces, stage_world
from dcod.toy.teacher import ToyTeacher

from conftest import REPO


@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_stored_logprobs_equal_a_fresh_teacher_pass(tmp_path, toy_tokenizer, temperature):
    profile = load_profile(REPO / "config/profiles/ci.yaml")
    profile.traces.temperature = temperature
    profile.world["n_train"] = 24
    stage_world(profile, tmp_path / "world")
    stage_traces(profile, tmp_path / "world", tmp_path / "traces.parquet")
    frame = pd.read_parquet(tmp_path / "traces.parquet")
    assert len(frame) > 0
    teacher = ToyTeacher(toy_tokenizer, p_direct=profile.teacher.p_direct, floor=profile.teacher.floor)
    for row in frame.itertuples():
        fresh = teacher.next_token_logprobs(list(row.prompt_ids), list(row.completion_ids), temperature=temperature)
        gathered = fresh[torch.arange(len(row.completion_ids)), torch.tensor(list(row.completion_ids))]
        # exact: the stored values are the float32 rows the teacher sampled from (the same cached
        # computation next_token_logprobs reads), written and read back without arithmetic
        assert torch.equal(gathered, torch.tensor(list(row.teacher_logprobs), dtype=torch.float32))
        assert len(row.topk_ids) == len(row.completion_ids)
        assert row.completion_ids[-1] == toy_tokenizer.eos_token_id


def test_no_verified_trace_is_a_clear_error(tmp_path):
    profile = load_profile(REPO / "config/profiles/ci.yaml")
    profile.world["n_train"] = 8
    profile.traces.max_new_tokens = 3  # every trace is cut before its answer: none verifies
    stage_world(profile, tmp_path / "world")
    with pytest.raises(RuntimeError, match="no teacher trace survived verification"):
        stage_traces(profile, tmp_path / "world", tmp_path / "traces.parquet")
    assert not (tmp_path / "traces.parquet").exists()


def test_training_uses_the_students_prompt_template(toy_tokenizer):
    """Traces keep the teacher's completion but get the student's prompt: here the student's template
    puts a marker before the question that the teacher's plain encoding does not have."""
    import copy

    from dcod.data import use_student_prompts
    from dcod.models import encode_prompt

    questions = ["Q:12+7\nA:", "Q:rev 381\nA:", "Q:12+7\nA:"]
    teacher_ids = [encode_prompt(toy_tokenizer, q) for q in questions]
    examples = [{"question": q, "prompt_ids": list(ids), "completion_ids": [5, 6]}
                for q, ids in zip(questions, teacher_ids)]
    assert use_student_prompts(copy.deepcopy(examples), toy_tokenizer) == 0  # one template: nothing changes
    student = copy.deepcopy(toy_tokenizer)
    student.chat_template = "{{ bos_token }}==\n{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert use_student_prompts(examples, student) == 3
    for example, question in zip(examples, questions):
        assert example["prompt_ids"] == encode_prompt(student, question)
        assert toy_tokenizer.decode(example["prompt_ids"], skip_special_tokens=True).startswith("==\nQ:")
        assert example["completion_ids"] == [5, 6]  # the teacher's completion is kept
    with pytest.raises(ValueError, match="trace 0 has no question"):
        use_student_prompts([{"prompt_ids": [1], "completion_ids": [2]}], toy_tokenizer)
