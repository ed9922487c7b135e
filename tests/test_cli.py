"""Smoke runs of the command-line tool with tiny budgets, in fresh processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from world_model import load_checkpoint


def gqn_gym(*args, cwd):
    result = subprocess.run(
        [sys.executable, "-m", "gqn_env.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_collect_train_resume_evaluate(tmp_path):
    out = gqn_gym(
        "collect", "--out", "s.gqnstore", "--scenes", "3", "--steps", "30", "--image-size", "16", cwd=tmp_path
    )
    assert "24 frames" in out
    common = ["--preset", "tiny", "--checkpoint", "c.pt", "--no-progress", "--env-id", "GQNMazeScene-S2-v0"]
    gqn_gym("train", *common, "--store", "s.gqnstore", "--offline", "--steps", "4", cwd=tmp_path)
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 4
    out = gqn_gym("train", *common, "--resume", "--steps", "6", "--warmup-scenes", "2", cwd=tmp_path)
    assert "resuming from c.pt at step 4" in out
    data = load_checkpoint(tmp_path / "c.pt")
    assert data["step"] == 6 and data["extra"]["mean_image"].shape == (16, 16, 3)
    out = gqn_gym(
        "evaluate",
        "--checkpoint",
        "c.pt",
        "--scenes",
        "2",
        "--context",
        "3",
        "--env-id",
        "GQNMazeScene-S2-v0",
        cwd=tmp_path,
    )
    assert "shuffled" in out and "nearest" in out


@pytest.mark.slow
def test_imagine_writes_videos_and_panel(tmp_path):
    gqn_gym(
        "train",
        "--preset",
        "tiny",
        "--checkpoint",
        "c.pt",
        "--no-progress",
        "--steps",
        "1",
        "--warmup-scenes",
        "1",
        "--env-id",
        "GQNMazeScene-S2-v0",
        cwd=tmp_path,
    )
    out = gqn_gym(
        "imagine", "--checkpoint", "c.pt", "--steps", "6", "--env-id", "GQNMaze-S2-v0", "--out", "vid", cwd=tmp_path
    )
    for name in ("imagination.mp4", "imagination.gif", "unvisited.png"):
        assert (tmp_path / "vid" / name).stat().st_size > 1000, name
    assert "imagination.mp4" in out
