from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from agents.rl import (
    SuccessCurve,
    WorldModelCallback,
    load_agent,
    make_vec_env,
    save_agent,
    steps_to_rolling_threshold,
    steps_to_threshold,
    success_curve,
)
from world_model import GQN, GQNConfig, SceneBuffer, Trainer

TINY_SCENE = {"num_rows": 1, "num_cols": 2, "max_episode_steps": 20, "map_size": 32}


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return GQN(GQNConfig.tiny())


@pytest.mark.slow
def test_tiny_ppo_on_gqn_maze_trains_saves_and_loads(tmp_path, tiny_model):
    venv = make_vec_env("gqn", "GQNMazeScene-v0", 2, seed=0, model=tiny_model, env_kwargs=TINY_SCENE)
    curve = SuccessCurve()
    agent = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    agent.learn(64, callback=curve)
    assert agent.num_timesteps >= 64 and len(curve.timesteps) >= 2  # 20-step episodes ended
    agent.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", device="cpu")
    obs = venv.reset()
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    venv.close()


@pytest.mark.slow
def test_tiny_ppo_on_pixels_with_frame_stack():
    venv = make_vec_env("pixels", "GQNMazeScene-v0", 2, seed=0, env_kwargs={**TINY_SCENE, "image_size": 36})
    assert venv.observation_space.shape == (36, 36, 12)
    # The stack holds the last 4 frames: a step drops the oldest and appends the new view.
    old = venv.reset()
    new, _, dones, _ = venv.step(np.array([2, 2]))
    assert not dones.any()
    np.testing.assert_array_equal(new[..., :9], old[..., 3:])
    assert not np.array_equal(new[..., 9:], new[..., 6:9])  # walking forward changed the view
    agent = PPO("CnnPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    agent.learn(32)
    assert agent.num_timesteps >= 32
    assert any(not torch.equal(v, before[k]) for k, v in agent.policy.state_dict().items())  # PPO updated it
    venv.close()


@pytest.mark.slow
def test_world_model_callback_feeds_the_buffer_and_updates_the_weights(tiny_model):
    config = tiny_model.config
    buffer = SceneBuffer(image_size=config.image_size, max_scenes=50)
    trainer = Trainer(tiny_model, buffer)
    venv = make_vec_env(
        "gqn_online",
        "GQNMazeScene-v0",
        2,
        seed=0,
        model=trainer.model,
        env_kwargs={**TINY_SCENE, "image_size": config.image_size, "obs_keys": ("representation", "viewpoint")},
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    callback = WorldModelCallback(trainer, buffer, updates_per_rollout=3, min_frames=8)
    agent = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    agent.learn(48, callback=callback)
    assert callback.frames_added == agent.num_timesteps >= 48
    assert len(buffer) == callback.frames_added and buffer.num_scenes >= 2
    assert callback.updates >= 3 and trainer.step_count == callback.updates
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    # After an update, the running representations were re-encoded with the new weights.
    current = venv.env_method("current_observation")[0]["representation"]
    wrapper_state = venv.env_method("get_wrapper_attr", "state")[0]
    episode = wrapper_state.episodes[0]
    images, vps = np.stack(episode.images), np.stack(episode.viewpoints)
    expected = wrapper_state.encode(images, vps).sum(0).reshape(-1) / len(images)
    np.testing.assert_allclose(current, expected, rtol=1e-4, atol=1e-5)
    venv.close()


def test_success_curve_and_threshold():
    curve = success_curve([10, 20, 60, 70, 90], [0, 0, 1, 0, 1], total=100, bins=4)
    np.testing.assert_array_equal(curve[[0, 2, 3]], [0.0, 0.5, 1.0])
    assert np.isnan(curve[1])
    assert steps_to_threshold(curve, 100, 0.5) == 75.0
    assert steps_to_threshold(curve, 100, 1.1) == float("inf")


def test_rolling_threshold_needs_a_whole_window_at_the_rate():
    steps = [10 * (i + 1) for i in range(8)]
    # One early success is a lucky window of 1, not a rate of 0.5 over 4 episodes.
    successes = [1, 0, 0, 0, 0, 1, 1, 0]
    assert steps_to_rolling_threshold(steps, successes, 0.5, window=4) == 70.0  # episodes 3-6: 2 of 4
    assert steps_to_rolling_threshold(steps, successes, 0.75, window=4) == float("inf")
    assert steps_to_rolling_threshold(steps[:3], successes[:3], 0.1, window=4) == float("inf")  # too few episodes


def test_save_and_load_agent_keeps_the_world_model_beside_the_policy(tmp_path, tiny_model):
    venv = make_vec_env("gqn", "GQNMazeScene-v0", 1, seed=0, model=tiny_model, env_kwargs=TINY_SCENE)
    agent = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    save_agent(agent, tmp_path / "agent", tiny_model)
    loaded, model = load_agent(tmp_path / "agent")
    assert (tmp_path / "agent" / "policy.zip").exists() and (tmp_path / "agent" / "world_model.pt").exists()
    assert model.config == tiny_model.config
    for name, value in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    obs = venv.reset()
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    venv.close()


@pytest.mark.slow
@pytest.mark.parametrize("obs", ["gqn", "gqn_lstm"])
def test_train_agent_example_trains_saves_and_evaluates(tmp_path, obs):
    script = Path(__file__).resolve().parents[2] / "examples" / "train_agent.py"
    common = [sys.executable, str(script), "--env-id", "GQNMazeScene-S2-v0", "--episode-steps", "20"]
    run = subprocess.run(
        [*common, "--obs", obs, "--steps", "512", "--num-envs", "2", "--out", str(tmp_path / "a")],
        capture_output=True, text=True, timeout=600,  # a guard against a hang: a loaded machine took over 300 s
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "a" / "policy.zip").exists() and (tmp_path / "a" / "world_model.pt").exists()
    run = subprocess.run([*common, "--load", str(tmp_path / "a"), "--episodes", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "success rate" in run.stdout


def test_vec_env_episodes_end_at_the_given_limit_with_the_scene_reward_scaled_by_it():
    """One limit drives gym.make's TimeLimit and the scene's own truncation and reward (default: 48 steps)."""
    venv = make_vec_env("state_oracle", "GQNMazeScene-v0", 1, seed=0, env_kwargs=TINY_SCENE)
    try:
        assert venv.get_attr("max_episode_steps")[0] == 20
        venv.reset()
        ends = []
        for _ in range(60):
            _, rewards, dones, infos = venv.step(np.array([0]))  # turning on the spot
            if dones[0]:
                ends.append((infos[0]["episode"]["l"], infos[0]["is_success"], float(rewards[0])))
        truncated = [end for end in ends if not end[1]]
        assert truncated and all(length == 20 for length, _, _ in truncated)
        for length, _, reward in (end for end in ends if end[1]):  # spawned in reach of the goal
            assert reward == pytest.approx(1 - 0.2 * length / 20)
    finally:
        venv.close()
