"""Training curves through accelerate's trackers (TensorBoard by default): every step's record of
train_log.jsonl, readable by TensorBoard's own reader; a resumed run shows each step once; the curves
never change what is trained."""

import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dcod.config import ConfigError, TrainConfig, parse_section
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams
from dcod.models import build_tiny_llama
from dcod.training import Trainer

from tiny_training import TINY, traces  # noqa: F401  (the module's toy traces fixture)


def _trainer(out, tokenizer, traces, method="dcod", steps=4, stop_after=None, **train):  # noqa: F811
    # ci-sized: the ci profile's tiny student shape, a few steps
    cfg = TrainConfig(steps=steps, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=2, **train)
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0, total_steps=steps)
    params = DCODParams() if method == "dcod" else None
    return Trainer(build_tiny_llama(TINY, tokenizer, seed=0), tokenizer, build_method(method, params, ctx, cost),
                   cfg, out, cost=cost, seed=0, progress=False, stop_after=stop_after)


def _curve_files(out) -> list:
    """The curves' event files: in the run's folder, tensorboard/dcod/ (the config's hparams event files sit
    in subfolders of it, one per start)."""
    return sorted((out / "tensorboard" / "dcod").glob("events.out.tfevents.*"))


def _curves(out) -> EventAccumulator:
    files = _curve_files(out)
    assert files, f"no TensorBoard event file under {out / 'tensorboard'}"
    events = EventAccumulator(str(files[0].parent))
    events.Reload()  # reads every event file of the folder, in order, as TensorBoard does
    return events


def _log(out) -> list[dict]:
    return [json.loads(line) for line in open(out / "train_log.jsonl")]


def _assert_curves_are_the_log(out, keys):
    events, log = _curves(out), _log(out)
    assert {*keys} <= set(events.Tags()["scalars"])
    for key in keys:
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["step"] for r in log]  # every logged step, once, in order
        # TensorBoard stores float32: the JSON value rounded to float32, exactly
        assert [s.value for s in scalars] == [float(np.float32(r[key])) for r in log]


def test_a_dcod_run_writes_loss_and_beta_at_every_step(toy_tokenizer, traces, tmp_path):  # noqa: F811
    _trainer(tmp_path, toy_tokenizer, traces).run()
    _assert_curves_are_the_log(tmp_path, ["loss", "lr", "grad_norm", "tokens", "beta", "ess_fraction",
                                          "clip_fraction", "weight_entropy", "mean_log_ratio"])
    assert [r["step"] for r in _log(tmp_path)] == [1, 2, 3, 4]


def test_a_resumed_run_shows_each_step_once(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """Interrupted after step 3 (checkpoint at 2): the resumed run logs 3..6 again into a new event file;
    the restart marker hides the first file's step 3, so TensorBoard's reader sees 1..6 once each."""
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path, toy_tokenizer, traces, steps=6, stop_after=3).run()
    resumed = _trainer(tmp_path, toy_tokenizer, traces, steps=6)
    resumed.run()
    assert resumed.start_step == 2
    assert len(_curve_files(tmp_path)) == 2
    _assert_curves_are_the_log(tmp_path, ["loss", "beta"])


def test_curves_change_no_trained_number_and_can_be_switched_off(toy_tokenizer, traces, tmp_path):  # noqa: F811
    on = _trainer(tmp_path / "on", toy_tokenizer, traces, "sft")
    off = _trainer(tmp_path / "off", toy_tokenizer, traces, "sft", trackers=[])
    on.run(), off.run()
    assert not (tmp_path / "off" / "tensorboard").exists()
    a, b = on.model.state_dict(), off.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if k != "elapsed"} for r in _log(tmp_path / "on")]
    assert strip == [{k: v for k, v in r.items() if k != "elapsed"} for r in _log(tmp_path / "off")]


def test_a_fresh_start_drops_the_curves_of_another_run(toy_tokenizer, traces, tmp_path):  # noqa: F811
    stale = tmp_path / "tensorboard" / "dcod" / "events.out.tfevents.stale"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    _trainer(tmp_path, toy_tokenizer, traces, "sft", steps=2).run()
    assert not stale.exists() and len(_curve_files(tmp_path)) == 1


def test_an_unknown_tracker_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"profile\.yaml: train\.trackers"):
        parse_section(TrainConfig, {"trackers": ["tensorbord"]}, "profile.yaml", "train")
    assert TrainConfig().trackers == ["tensorboard"] and TrainConfig(trackers=[]).trackers == []


# ----------------------------------------------------------------------------- run names and config
FINGERPRINT = {"config": {"profile": {"name": "toy", "student": {"path": None}, "data": {"source": "toy"}},
                          "experiment": {"name": "dcod_ablation", "params": {"beta": 1.0}}},
               "inputs": {"traces": "abc123"}}


def _named_trainer(out, tokenizer, traces, **train):  # noqa: F811
    cfg = TrainConfig(steps=2, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=2, **train)
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0, total_steps=2)
    return Trainer(build_tiny_llama(TINY, tokenizer, seed=0), tokenizer, build_method("sft", None, ctx, cost),
                   cfg, out, cost=cost, seed=3, progress=False, fingerprint=FINGERPRINT)


def test_the_tensorboard_run_records_the_resolved_config(toy_tokenizer, traces, tmp_path):  # noqa: F811
    import yaml

    from dcod.training import flat_config

    trainer = _named_trainer(tmp_path, toy_tokenizer, traces)
    trainer.run()
    assert trainer.run_name == "toy/dcod_ablation/seed3/lr0.003"
    stored = [yaml.safe_load(p.read_text()) for p in (tmp_path / "tensorboard" / "dcod").glob("*/hparams.yml")]
    assert len(stored) == 1
    config = stored[0]
    assert config == flat_config(trainer.tracked_config())
    assert config["run_name"] == "toy/dcod_ablation/seed3/lr0.003" and config["seed"] == 3
    assert config["train.lr"] == 3e-3 and config["train.steps"] == 2 and config["method"] == "sft"
    assert config["experiment.params.beta"] == 1.0 and config["inputs.traces"] == "abc123"
    assert config["train.trackers"] == '["tensorboard"]'  # a list, as JSON text (hparams take scalars)
    # the hparams plugin's event (TensorBoard's HPARAMS tab) beside hparams.yml
    hparams_events = EventAccumulator(str(next((tmp_path / "tensorboard" / "dcod").glob("*/events.*")).parent))
    hparams_events.Reload()
    assert hparams_events.PluginTagToContent("hparams")  # the session's hyperparameter summaries


def test_wandb_is_selectable_and_gets_the_run_name_and_config(toy_tokenizer, traces, tmp_path, monkeypatch):  # noqa: F811
    """train.trackers [wandb] through accelerate's own WandBTracker, with a stand-in for the wandb package
    (not installed here): the run is wandb.init(project="dcod", name=<run name>), its config the resolved
    config, and every train_log record is logged at its step."""
    import sys
    import types

    import accelerate.tracking
    from accelerate.utils import LoggerType

    from dcod.training import flat_config

    calls = {"init": [], "config": {}, "log": [], "finished": 0}

    class Run:
        def log(self, values, step=None):
            calls["log"].append((step, values))

        def finish(self):
            calls["finished"] += 1

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls["init"].append(kwargs) or Run()
    fake.config = types.SimpleNamespace(update=lambda values, allow_val_change: calls["config"].update(values))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [LoggerType.WANDB])
    trainer = _named_trainer(tmp_path, toy_tokenizer, traces, trackers=["wandb"])
    trainer.run()
    assert calls["init"] == [{"project": "dcod", "name": "toy/dcod_ablation/seed3/lr0.003"}]
    assert calls["config"] == flat_config(trainer.tracked_config())
    assert [step for step, _ in calls["log"]] == [1, 2] and calls["finished"] == 1
    assert [values["loss"] for _, values in calls["log"]] == [r["loss"] for r in _log(tmp_path)]


def test_wandb_without_its_package_is_refused(toy_tokenizer, traces, tmp_path):  # noqa: F811
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ValueError, match="train.trackers: wandb not installed"):
        _named_trainer(tmp_path, toy_tokenizer, traces, trackers=["wandb"])


# ----------------------------------------------------------------------------- the saved model
def test_saved_model_dtype_and_model_card(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """float32 (the default) saves the trained weights exactly; bfloat16 saves them rounded to bf16, with
    config.json saying so; both write a model card naming base model, teacher, method, data and commit."""
    import json

    from transformers import AutoModelForCausalLM

    saved = {}
    for dtype in ("float32", "bfloat16"):
        trainer = _named_trainer(tmp_path / dtype, toy_tokenizer, traces, save_dtype=dtype)
        trainer.run()
        trainer.save_model(tmp_path / dtype / "model")
        trained = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        model = AutoModelForCausalLM.from_pretrained(tmp_path / dtype / "model", dtype="auto")
        saved[dtype] = (trained, model)
        assert json.loads((tmp_path / dtype / "model" / "config.json").read_text())["dtype"] == dtype
        card = (tmp_path / dtype / "model" / "README.md").read_text()
        assert card.startswith("# toy/dcod_ablation/seed3/lr0.003\n")
        for needle in ("base model: a tiny Llama", "teacher: the programmatic toy teacher",
                       "method: sft (experiment dcod_ablation", "traces sha256 abc123", f"weights saved in {dtype}",
                       "code: commit "):
            assert needle in card, needle
    trained, model = saved["float32"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(model.state_dict()[k], trained[k]) for k in model.state_dict())
    trained, model = saved["bfloat16"]
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.equal(model.state_dict()[k], trained[k].to(torch.bfloat16)) for k in model.state_dict())


def test_save_dtype_is_checked():
    with pytest.raises(ConfigError, match="train.save_dtype"):
        parse_section(TrainConfig, {"save_dtype": "float16"}, "profile.yaml", "train")
