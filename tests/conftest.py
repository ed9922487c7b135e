"""Shared fixtures. Tests use tiny mazes and small images to stay fast."""

from __future__ import annotations

import os

os.environ.setdefault("PYGLET_HEADLESS", "1")

import gymnasium as gym  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

import gqn_env  # noqa: E402,F401

# Property tests draw the same examples on every run (CI stays deterministic);
# HYPOTHESIS_PROFILE=explore draws fresh random ones on each run, to hunt for new failures.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SMALL_SCENE = {"num_rows": 2, "num_cols": 2, "image_size": 32, "map_size": 64}


@pytest.fixture
def make_scene():
    """Factory for small scene envs, closed at the end of the test."""
    made = []

    def _make(**kwargs):
        env = gym.make("GQNMazeScene-v0", **{**SMALL_SCENE, **kwargs})
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()
