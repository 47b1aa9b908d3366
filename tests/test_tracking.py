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

from test_training import TINY, traces  # noqa: F401  (the module's toy traces fixture)


def _trainer(out, tokenizer, traces, method="dcod", steps=4, stop_after=None, **train):  # noqa: F811
    # ci-sized: the ci profile's tiny student shape, a few steps
    cfg = TrainConfig(steps=steps, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=2, **train)
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0, total_steps=steps)
    params = DCODParams() if method == "dcod" else None
    return Trainer(build_tiny_llama(TINY, tokenizer, seed=0), tokenizer, build_method(method, params, ctx, cost),
                   cfg, out, cost=cost, seed=0, progress=False, stop_after=stop_after)


def _curves(out) -> EventAccumulator:
    files = list((out / "tensorboard").rglob("events.out.tfevents.*"))
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
    assert len(list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))) == 2
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
    assert not stale.exists() and len(list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))) == 1


def test_an_unknown_tracker_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"profile\.yaml: train\.trackers"):
        parse_section(TrainConfig, {"trackers": ["tensorbord"]}, "profile.yaml", "train")
    assert TrainConfig().trackers == ["tensorboard"] and TrainConfig(trackers=[]).trackers == []
