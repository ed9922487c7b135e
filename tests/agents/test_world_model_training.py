"""The one training entry point: ``agents.world_model_training.train`` driven by a ``RunConfig``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from agents.training_loop import Hook
from agents.world_model_training import RunConfig, TrainingRunError, train
from tests.world_model.conftest import fill_buffer
from world_model import GQNConfig, load_checkpoint


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.gqnstore"
    fill_buffer(GQNConfig.tiny(), scenes=6, frames=10).save_to(path)
    return str(path)


def offline(store, tmp_path, **kwargs) -> RunConfig:
    settings = {"preset": "tiny", "stores": [store], "online": False, "progress": False}
    return RunConfig(**{**settings, "checkpoint": str(tmp_path / "c.pt"), **kwargs})


class Recorder(Hook):
    def __init__(self):
        self.events = []

    def on_start(self, loop):
        self.events.append(("start", loop.steps))

    def on_step(self, loop):
        self.events.append(("step", loop.steps))

    def on_end(self, loop):
        self.events.append(("end", loop.steps, loop.summary["steps"]))

    def close(self):
        self.events.append(("close",))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give minutes, steps or both"),
        ({"steps": 1, "online": False}, "offline run trains on stores"),
        ({"minutes": 0, "steps": 1}, "minutes must be > 0, got 0"),
        ({"steps": 1, "eval_scenes": 1}, "eval_scenes must be 0 or >= 2"),
    ],
)
def test_run_config_refuses_contradictions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


def test_offline_run_is_a_plain_loop_with_hooks_and_no_collection(store, tmp_path):
    recorder = Recorder()
    loop = train(offline(store, tmp_path, steps=3), hooks=[recorder])
    assert recorder.events == [("start", 0), ("step", 1), ("step", 2), ("step", 3), ("end", 3, 3), ("close",)]
    summary = loop.summary
    assert summary["steps"] == summary["total_steps"] == 3
    assert summary["scenes_collected"] == summary["frames_collected"] == 0 and summary["collect_seconds"] == 0
    data = load_checkpoint(tmp_path / "c.pt")
    assert data["step"] == 3 and data["extra"]["mean_image"].shape == (16, 16, 3)


def test_resumed_run_takes_the_same_steps_as_an_uninterrupted_one(store, tmp_path, capsys):
    straight = train(offline(store, tmp_path / "a", steps=4)).trainer.model.state_dict()
    train(offline(store, tmp_path / "b", steps=2))
    resumed = train(offline(store, tmp_path / "b", steps=4, resume=True))
    assert f"resuming from {tmp_path / 'b' / 'c.pt'} at step 2" in capsys.readouterr().out
    assert resumed.summary["steps"] == 2 and resumed.trainer.step_count == 4
    for name, value in resumed.trainer.model.state_dict().items():
        assert torch.equal(value, straight[name]), name


def test_a_run_without_a_gradient_step_fails_and_writes_no_checkpoint(store, tmp_path):
    with pytest.raises(TrainingRunError, match="no gradient step within the .*-minute budget"):
        train(offline(store, tmp_path, minutes=1e-9))
    assert not (tmp_path / "c.pt").exists()
    train(offline(store, tmp_path, steps=2))
    before = (tmp_path / "c.pt").stat().st_mtime_ns
    with pytest.raises(TrainingRunError, match="already at step 2"):
        train(offline(store, tmp_path, steps=2, resume=True))
    assert (tmp_path / "c.pt").stat().st_mtime_ns == before


def test_resume_may_change_schedules_not_architecture(store, tmp_path):
    train(offline(store, tmp_path, steps=1))
    loop = train(offline(store, tmp_path, steps=2, resume=True, overrides=["lr_anneal_steps=50"]))
    assert loop.config.lr_anneal_steps == 50
    with pytest.raises(TrainingRunError, match="architecture.*num_layers"):
        train(offline(store, tmp_path, steps=3, resume=True, overrides=["num_layers=3"]))
    with pytest.raises(TrainingRunError, match="--set: .*layers=3"):
        train(offline(store, tmp_path, steps=3, overrides=["layers=3"]))


def test_a_store_of_another_image_size_is_refused_clearly(store, tmp_path):
    with pytest.raises(TrainingRunError, match="16px frames; the model takes 32px"):
        train(offline(store, tmp_path, steps=1, preset="cpu"))


@pytest.mark.slow
def test_online_warmup_is_cut_to_fit_the_budget(tmp_path, capsys):
    # Issue 19: `--preset tiny --minutes 1` used to walk all 400 warm-up scenes (2 min 40 s), then stop at 0 steps.
    run = RunConfig(
        preset="tiny",
        minutes=0.1,
        checkpoint=str(tmp_path / "c.pt"),
        env_id="GQNMazeScene-S2-v0",
        warmup_scenes=400,
        steps_per_scene=40,
        progress=False,
    )
    start = time.perf_counter()
    loop = train(run)
    elapsed = time.perf_counter() - start
    assert "warm-up cut to" in capsys.readouterr().err
    summary = loop.summary
    assert summary["steps"] > 0 and 0 < summary["scenes_collected"] < 400
    assert summary["seconds"] < 6 + 3  # the budget, plus at most one step and one scene
    assert elapsed < 6 + 10  # and the final checkpoint
    assert load_checkpoint(tmp_path / "c.pt")["extra"]["next_scene"] == summary["next_scene"]


@pytest.mark.slow
def test_cli_budget_too_small_for_any_step_exits_non_zero(tmp_path):
    fill_buffer(GQNConfig.tiny(), scenes=4, frames=6).save_to(tmp_path / "s.gqnstore")
    cmd = [sys.executable, "-m", "gqn_env.cli", "train", "--preset", "tiny", "--checkpoint", "c.pt", "--no-progress"]
    result = subprocess.run(
        [*cmd, "--store", "s.gqnstore", "--offline", "--minutes", "1e-9"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "no gradient step within" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "c.pt").exists()
    ok = subprocess.run(
        [*cmd, "--store", "s.gqnstore", "--offline", "--steps", "2"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout[ok.stdout.index("{") : ok.stdout.rindex("}") + 1])["steps"] == 2
