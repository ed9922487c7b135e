"""stable-baselines3 glue: vector envs, the online world-model callback, PPO helpers.

Three observation types on the same scenes:

* ``gqn``: ``GQNMaze`` (representation + viewpoint) with a frozen world model
  (the bundled one by default): PPO ``MultiInputPolicy``;
* ``gqn_online``: the same, but the world model starts from scratch and trains on
  the frames the RL agent sees (:class:`WorldModelCallback`);
* ``pixels``: the raw egocentric image, 4 frames stacked for memory
  (``VecFrameStack``), PPO ``CnnPolicy`` (SB3's Nature CNN).

**Non-stationary features.** With ``gqn_online`` the observation function changes
when the world model is updated, and PPO's value estimates and old log-probs are
only valid for the features they were computed on. :class:`WorldModelCallback`
therefore updates the world model only in ``_on_rollout_end`` (after the rollout
buffer is full, before PPO's update): a whole rollout is encoded by one model.
Then it re-encodes every running episode's frames with the new weights
(``GQNRepresentation.refresh``) and replaces PPO's ``_last_obs``, so the next
rollout is consistent too. The policy still sees features drift between
rollouts; keeping world-model updates per rollout small (``updates_per_rollout``)
keeps that drift small.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack

OBS_TYPES = ("gqn", "gqn_online", "pixels")


class ImageOnly(gym.ObservationWrapper):
    """Observe only the egocentric image of a scene env (for the pixel baseline)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = env.observation_space["image"]

    def observation(self, observation: dict) -> np.ndarray:
        """The image."""
        return observation["image"]


def make_vec_env(
    obs_type: str, env_id: str, num_envs: int, seed: int, model: Any = None, env_kwargs: dict | None = None
) -> VecEnv:
    """A DummyVecEnv of monitored envs for ``obs_type`` (see the module docstring).

    ``env_id`` is a scene id such as ``GQNMazeScene-S2-v0``; for the GQN types the
    matching ``GQNMaze`` id is used, with ``model`` shared by all sub-envs.
    """
    if obs_type not in OBS_TYPES:
        raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
    kwargs = dict(env_kwargs or {})

    def factory(i: int) -> Callable[[], gym.Env]:
        def make() -> gym.Env:
            if obs_type == "pixels":
                env = ImageOnly(gym.make(f"gqn_env:{env_id}", **kwargs))
            else:
                gqn_id = env_id.replace("GQNMazeScene", "GQNMaze")
                env = gym.make(f"gqn_env:{gqn_id}", model=model, emit_frames=obs_type == "gqn_online", **kwargs)
            env = Monitor(env, info_keywords=("is_success",))
            env.reset(seed=seed * 1000 + i)
            return env

        return make

    venv = DummyVecEnv([factory(i) for i in range(num_envs)])
    venv.seed(seed * 1000)
    return VecFrameStack(venv, 4) if obs_type == "pixels" else venv


class SuccessCurve(BaseCallback):
    """Record ``(timestep, success)`` at every episode end, for learning curves."""

    def __init__(self) -> None:
        super().__init__()
        self.timesteps: list[int] = []
        self.successes: list[float] = []

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done:
                self.timesteps.append(self.num_timesteps)
                self.successes.append(float(info.get("is_success", False)))
        return True


class WorldModelCallback(BaseCallback):
    """Feed every frame the RL agent sees to the world model's stream; train it between rollouts.

    Args:
        trainer: A :class:`world_model.Trainer`; its model must be the one the envs encode with.
        buffer: The trainer's :class:`world_model.SceneBuffer`.
        updates_per_rollout: World-model gradient steps after each rollout.
        min_frames: Frames needed in the buffer before the first update.
    """

    def __init__(self, trainer: Any, buffer: Any, updates_per_rollout: int = 8, min_frames: int = 256) -> None:
        super().__init__()
        self.trainer = trainer
        self.buffer = buffer
        self.updates_per_rollout = updates_per_rollout
        self.min_frames = min_frames
        self.updates = 0
        self.frames_added = 0
        self._episode: np.ndarray | None = None

    def _on_training_start(self) -> None:
        self._episode = np.zeros(self.training_env.num_envs, dtype=np.int64)

    def _scene_ids(self) -> np.ndarray:
        # Unique per (sub-env, episode): sub-env index in the low digits.
        return self._episode * 10_000 + np.arange(len(self._episode))

    def _on_step(self) -> bool:
        infos, dones = self.locals["infos"], self.locals["dones"]
        if "frame" not in infos[0]:
            raise ValueError("WorldModelCallback needs envs made with emit_frames=True")
        # The frame in info is the post-step frame; on done it is the terminal frame of the old episode.
        images = np.stack([info["frame"] for info in infos])
        viewpoints = np.stack([info["frame_viewpoint"] for info in infos])
        self.buffer.add_batch(self._scene_ids(), images, viewpoints)
        self.frames_added += len(images)
        self._episode += np.asarray(dones, dtype=np.int64)
        return True

    def _on_rollout_end(self) -> None:
        if len(self.buffer) < self.min_frames or self.buffer.num_scenes < 2:
            return
        stats = {}
        for _ in range(self.updates_per_rollout):
            stats = self.trainer.step()
        self.updates += self.updates_per_rollout
        for key in ("loss", "mse", "kl"):
            if key in stats:
                self.logger.record(f"world_model/{key}", stats[key])
        self._refresh_observations()

    def _refresh_observations(self) -> None:
        venv = self.training_env
        venv.env_method("refresh")
        current = venv.env_method("current_observation")
        self.model._last_obs = {k: np.stack([obs[k] for obs in current]) for k in current[0]}


def success_curve(timesteps: list[int], successes: list[float], total: int, bins: int = 20) -> np.ndarray:
    """Success rate of the episodes ending in each of ``bins`` equal step intervals (NaN where none ended)."""
    edges = np.linspace(0, total, bins + 1)
    idx = np.clip(np.searchsorted(edges, np.asarray(timesteps), side="right") - 1, 0, bins - 1)
    rates = np.full(bins, np.nan)
    for b in range(bins):
        mask = idx == b
        if mask.any():
            rates[b] = float(np.mean(np.asarray(successes)[mask]))
    return rates


def steps_to_threshold(curve: np.ndarray, total: int, threshold: float) -> float:
    """Steps until the binned success rate first reaches ``threshold`` (inf if never)."""
    bins = len(curve)
    hits = np.flatnonzero(np.nan_to_num(curve, nan=0.0) >= threshold)
    return float((hits[0] + 1) * total / bins) if hits.size else float("inf")


def save_agent(agent: Any, out_dir: str | Path, world_model: Any = None) -> Path:
    """Save a PPO agent as ``out_dir/policy.zip`` with its world model beside it (``world_model.pt``).

    The world model is saved as weights and config (atomic, checksummed, loadable without
    unpickling code), so :func:`load_agent` restores the pair and the policy sees the
    features it was trained on.
    """
    from world_model import save_checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    agent.save(out / "policy.zip")
    if world_model is not None:
        save_checkpoint(out / "world_model.pt", model=world_model)
    return out


def load_agent(out_dir: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """Load what :func:`save_agent` wrote: ``(PPO agent, world model or None)``."""
    from stable_baselines3 import PPO

    from world_model import load_model

    out = Path(out_dir)
    agent = PPO.load(out / "policy.zip", device=device)
    model_path = out / "world_model.pt"
    model = load_model(model_path, device=device).eval() if model_path.exists() else None
    return agent, model
