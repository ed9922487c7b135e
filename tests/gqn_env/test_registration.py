"""gym.make's ``max_episode_steps`` drives the scene's own limit (truncation and reward)."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch

from gqn_env.envs import maze_scene
from world_model import GQN, GQNConfig

SMALL = {"image_size": 16, "map_size": 32}
DEFAULT_S2_LIMIT = 24 * 2 * 2  # the scene's own default on S2: 96


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GQN(GQNConfig.tiny()).eval()


def _steps_until_truncated(env, most: int) -> int:
    env.reset(seed=0)
    for t in range(1, most + 1):
        _, _, terminated, truncated, _ = env.step(0)  # turning in place never reaches the goal
        assert not terminated
        if truncated:
            return t
    return -1


@pytest.mark.parametrize("env_id", ["GQNMazeScene-S2-v0", "GQNMaze-S2-v0"])
def test_episodes_truncate_at_the_limit_given_to_gym_make(env_id, model):
    kwargs = {"model": model} if env_id.startswith("GQNMaze-") else SMALL
    limit = DEFAULT_S2_LIMIT + 24  # above the scene's default: before the fix episodes ended at 96
    env = gym.make(env_id, max_episode_steps=limit, **kwargs)
    try:
        assert env.unwrapped.max_episode_steps == limit
        assert _steps_until_truncated(env, limit + 5) == limit
        # The scene truncates by itself at the same step, not only gym.make's TimeLimit.
        scene = env.unwrapped
        scene.reset(seed=0)
        flags = [scene.step(0)[3] for _ in range(limit)]
        assert flags.index(True) == limit - 1
    finally:
        env.close()


def test_the_goal_reward_is_scaled_by_the_limit_given_to_gym_make():
    env = gym.make("GQNMazeScene-S2-v0", max_episode_steps=500, **SMALL)
    try:
        env.reset(seed=1)
        for _ in range(9):
            env.step(0)
        scene = env.unwrapped
        goal = scene.goal
        scene.agent.pos = goal.pos + np.array([goal.radius + scene.agent.radius + 0.05, 0.0, 0.0])
        _, reward, terminated, _, _ = env.step(0)
        assert terminated
        assert reward == pytest.approx(1 - 0.2 * 10 / 500)  # with T = 96 it was 1 - 0.2 * 10 / 96
    finally:
        env.close()


def test_the_limit_survives_pickling_and_remaking_from_the_spec():
    env = gym.make("GQNMazeScene-S2-v0", max_episode_steps=7, **SMALL)
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    again = gym.make(env.spec)
    try:
        assert clone.max_episode_steps == 7
        assert again.unwrapped.max_episode_steps == 7 and again.spec.max_episode_steps == 7
    finally:
        for e in (env, clone, again):
            e.close()


def test_without_a_limit_or_with_minus_one_the_scene_keeps_its_default():
    plain = gym.make("GQNMazeScene-S2-v0", **SMALL)
    unwrapped = gym.make("GQNMazeScene-S2-v0", max_episode_steps=-1, **SMALL)  # Gymnasium's "no TimeLimit"
    try:
        assert plain.unwrapped.max_episode_steps == DEFAULT_S2_LIMIT
        assert unwrapped.unwrapped.max_episode_steps == DEFAULT_S2_LIMIT
    finally:
        plain.close()
        unwrapped.close()


@pytest.mark.parametrize("env_id", ["GQNMazeScene-S2-v0", "GQNMaze-S2-v0"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_limits_are_refused_before_the_scene_is_built(env_id, bad, model, monkeypatch):
    built = []
    monkeypatch.setattr(maze_scene.MiniWorldEnv, "__init__", lambda *a, **k: built.append(1))
    kwargs = {"model": model} if env_id.startswith("GQNMaze-") else {}
    with pytest.raises(ValueError, match=r"max_episode_steps must be a positive integer.*got"):
        gym.make(env_id, max_episode_steps=bad, **kwargs)
    assert not built
