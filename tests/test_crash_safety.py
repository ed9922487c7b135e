"""kill -9 a real training run and a real collection run, then resume.

Nothing written before the kill may be lost or corrupt: the last checkpoint loads
and training resumes from its step; every store record read before the kill reads
back identically afterwards, and appending goes on after a torn tail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.world_model.conftest import fill_buffer
from world_model import GQNConfig, SceneStore, load_checkpoint


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gqn_env.cli", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0, extra_s: float = 0.0) -> None:
    """SIGKILL ``proc`` ``extra_s`` seconds after ``ready()`` first holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run to make progress")
        time.sleep(0.05)
    time.sleep(extra_s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def read_frames(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chunks = list(SceneStore(path).iter_chunks())
    return tuple(np.concatenate([c[i] for c in chunks]) for i in range(3))  # ids, images, viewpoints


def test_kill_during_training_then_resume(tmp_path):
    fill_buffer(GQNConfig.tiny(), scenes=8, frames=12).save_to(tmp_path / "s.gqnstore")
    common = ["train", "--preset", "tiny", "--checkpoint", "c.pt", "--store", "s.gqnstore", "--offline"]
    common += ["--no-progress", "--checkpoint-every", "0"]  # a checkpoint after every step
    ckpt = tmp_path / "c.pt"
    proc = start(*common, "--steps", "1000000", cwd=tmp_path)
    kill_when(proc, ckpt.exists, extra_s=2.0)

    data = load_checkpoint(ckpt)  # loads: complete and uncorrupted, never half-written
    step = data["step"]
    assert step >= 1
    proc = start(*common, "--resume", "--steps", str(step + 3), cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert f"resuming from c.pt at step {step}" in out
    assert load_checkpoint(ckpt)["step"] == step + 3
    # A temporary the killed run may have left mid-write is removed by the next save.
    assert not list(tmp_path.glob(".c.pt.*")), sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.slow
def test_kill_during_collection_keeps_earlier_frames(tmp_path):
    store = tmp_path / "s.gqnstore"
    common = ["collect", "--out", "s.gqnstore", "--env-id", "GQNMazeScene-S2-v0", "--image-size", "16"]
    common += ["--steps", "40", "--chunk-frames", "4"]
    proc = start(*common, "--scenes", "100000", cwd=tmp_path)
    kill_when(proc, lambda: store.exists() and store.stat().st_size > 20_000, extra_s=0.0)
    # What a reader saw after the kill; then the writer dies in the middle of later records.
    before = read_frames(store)
    assert len(before[0]) >= 8

    proc = start(*common, "--scenes", "100000", "--seed", "1", cwd=tmp_path)
    size = store.stat().st_size
    kill_when(proc, lambda: store.stat().st_size > size + 5_000, extra_s=0.3)
    after = read_frames(store)
    assert len(after[0]) > len(before[0])
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new[: len(old)], old)

    proc = start(*common, "--scenes", "2", "--seed", "2", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    final = read_frames(store)
    for old, new in zip(after, final, strict=True):
        np.testing.assert_array_equal(new[: len(old)], old)
    assert len(final[0]) > len(after[0])
    reader = SceneStore(store)
    list(reader.iter_chunks())
    assert reader.num_corrupt_bytes == 0  # the torn tail was cut before the new records went on
