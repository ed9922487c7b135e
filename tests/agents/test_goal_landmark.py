"""GoalLandmark: the landmarks row that marks the agent's successes, as an estimated goal position."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.goal_landmark import FIELDS, KEY, GoalLandmark

CHANNELS, GRID = 6, 2


class Toy(gym.Env):
    """Episodes of 6 steps; channel ``goal`` lights up over the last 3 frames of the successful ones."""

    def __init__(self, goal: int = 4, seed: int = 0) -> None:
        self.observation_space = gym.spaces.Dict(
            {
                "patches": gym.spaces.Box(-np.inf, np.inf, (CHANNELS, GRID, GRID), np.float32),
                "landmarks": gym.spaces.Box(-np.inf, np.inf, (CHANNELS, 7), np.float32),
                "viewpoint": gym.spaces.Box(-1, 1, (7,), np.float32),
            }
        )
        self.action_space = gym.spaces.Discrete(3)
        self.goal, self.rng, self.t, self.episode = goal, np.random.default_rng(seed), 0, 0

    def _obs(self) -> dict:
        patches = self.rng.random((CHANNELS, GRID, GRID)).astype(np.float32)
        if self.episode % 2 == 0 and self.t >= 3:  # even episodes succeed
            patches[self.goal] += 5.0
        landmarks = self.rng.normal(size=(CHANNELS, 7)).astype(np.float32)
        return {"patches": patches, "landmarks": landmarks, "viewpoint": np.zeros(7, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t == 6
        obs = self._obs()
        info = {"is_success": done and self.episode % 2 == 0}
        if done:
            self.episode += 1
        return obs, float(info["is_success"]), done, False, info


def test_goal_landmark_picks_the_channel_that_marks_success_and_keeps_terminal_observations_consistent():
    venv = GoalLandmark(DummyVecEnv([lambda: Toy(seed=0), lambda: Toy(seed=1)]), min_successes=3, window=4)
    assert set(venv.observation_space.spaces) == {"patches", "viewpoint", KEY}
    assert venv.observation_space[KEY].shape == (len(FIELDS),)
    obs = venv.reset()
    assert venv.channel == -1 and not obs[KEY].any()  # nothing chosen before any success
    for _ in range(30):  # 5 episodes per env, 3 of them successful
        obs, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
        assert venv.observation_space.contains({k: v[0] for k, v in obs.items()})
        for done, info in zip(dones, infos, strict=True):
            if done:
                assert set(info["terminal_observation"]) == {"patches", "viewpoint", KEY}
    assert venv.successes == 6
    assert venv.channel == 4
    assert (obs[KEY][:, -1] == 1).all()

    restored = GoalLandmark(DummyVecEnv([lambda: Toy(seed=2)]), min_successes=3)
    restored.load_state(venv.state())
    assert restored.channel == 4


def test_goal_landmark_estimate_follows_the_patch_columns_line_of_sight():
    venv = GoalLandmark(DummyVecEnv([Toy]), depth=1.0)
    # Stood here, facing as now, feature in the middle column: straight ahead at depth 1.
    ahead = venv.estimate(np.array([2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(ahead, [2.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0], atol=1e-6)
    # Stood 1 ahead, faced 90 degrees left of now: the feature lies 1 to the left of that spot.
    left = venv.estimate(np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]))
    np.testing.assert_allclose(left[1:4], [1.0, -1.0, math.sqrt(2)], atol=1e-6)
    # The right-most column (0.5) looks 30 degrees (half the field of view) right of the heading.
    right = venv.estimate(np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.0]))
    assert math.degrees(math.atan2(right[5], right[4])) == pytest.approx(30.0)


def test_goal_landmark_refuses_observations_without_landmarks_and_bad_settings():
    class NoLandmarks(Toy):
        def __init__(self) -> None:
            super().__init__()
            self.observation_space = gym.spaces.Dict({"patches": self.observation_space["patches"]})

    with pytest.raises(ValueError, match="landmarks"):
        GoalLandmark(DummyVecEnv([NoLandmarks]))
    with pytest.raises(ValueError, match="at least 1"):
        GoalLandmark(DummyVecEnv([Toy]), min_successes=0)
    other = GoalLandmark(DummyVecEnv([Toy]))
    with pytest.raises(ValueError, match="channels"):
        other.load_state({**other.state(), "sum": np.zeros(3)})


def test_goal_landmark_statistics_are_saved_with_the_agent_and_restored(tmp_path):
    import torch

    from agents.rl import find_wrapper, make_agent, make_vec_env, restore_normalization, save_agent
    from world_model import GQN, GQNConfig

    torch.manual_seed(0)
    model = GQN(GQNConfig.tiny())
    kwargs = {
        "num_rows": 2,
        "num_cols": 2,
        "max_episode_steps": 20,
        "map_size": 32,
        "image_size": 16,
        "obs_keys": ("patches", "landmarks", "viewpoint"),
    }
    venv = make_vec_env("gqn", "GQNMazeScene-v0", 2, seed=0, model=model, env_kwargs=kwargs, goal_landmark=True)
    assert KEY in venv.observation_space.spaces and "landmarks" not in venv.observation_space.spaces
    agent = make_agent("gqn", venv, {"n_steps": 32, "batch_size": 32, "n_epochs": 1})
    agent.learn(64)
    trained = find_wrapper(venv, GoalLandmark)
    assert trained.frames >= 64
    save_agent(agent, tmp_path / "a", model, obs_type="gqn", env_kwargs=kwargs)
    fresh = make_vec_env("gqn", "GQNMazeScene-v0", 1, seed=5, model=model, env_kwargs=kwargs, goal_landmark=True)
    restored = find_wrapper(restore_normalization(fresh, tmp_path / "a"), GoalLandmark)
    for key, value in trained.state().items():
        np.testing.assert_array_equal(restored.state()[key], value)
    (tmp_path / "a" / "goal_landmark.npz").unlink()
    with pytest.raises(FileNotFoundError, match="goal_landmark"):
        restore_normalization(fresh, tmp_path / "a")
    with pytest.raises(ValueError, match="gqn"):
        make_vec_env("pixels", "GQNMazeScene-v0", 1, seed=0, env_kwargs={"image_size": 16}, goal_landmark=True)
    venv.close()
    fresh.close()
