"""stable-baselines3 glue: vector envs, the online world-model callback, PPO helpers.

Observation types on the same scenes:

* ``gqn``: ``GQNMaze`` (representation + viewpoint) with a frozen world model
  (the bundled one by default): PPO ``MultiInputPolicy``;
* ``gqn_online``: the same, but the world model starts from scratch and trains on
  the frames the RL agent sees (:class:`WorldModelCallback`);
* ``pixels``: the raw egocentric image, 4 frames stacked for memory
  (``VecFrameStack``), PPO ``CnnPolicy`` (SB3's Nature CNN);
* ``pixels_lstm``: the raw image, one frame, sb3-contrib ``RecurrentPPO`` with
  ``CnnLstmPolicy`` (the memory baseline);
* ``gqn_lstm``: ``gqn``'s observation read by sb3-contrib ``RecurrentPPO``
  (``MultiInputLstmPolicy`` over :class:`agents.features.GQNMazeExtractor`, with
  an LSTM from :data:`LSTM_POLICIES`);
* ``state_oracle``: privileged state (:class:`agents.oracle.StateOracle`), PPO
  ``MlpPolicy``: a reference that bounds what any observation can buy;
* ``oracle_memory`` and ``oracle_view``: the same, but the goal's position is
  known only from when it was first seen, or only while it is in view
  (:data:`ORACLE_TYPES`): what perfect memory, and perfect perception alone, buy.

Every type trains with the same PPO settings (:data:`PPO_SETTINGS`, chosen by
:func:`make_agent`), so a comparison between them is one of observations only.

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

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecNormalize

OBS_TYPES = ("gqn", "gqn_online", "gqn_lstm", "pixels", "pixels_lstm", "state_oracle", "oracle_memory", "oracle_view")
GQN_TYPES = ("gqn", "gqn_online", "gqn_lstm")
PIXEL_TYPES = ("pixels", "pixels_lstm")
#: Each oracle type and when it knows the goal (:data:`agents.oracle.GOAL_MODES`).
ORACLE_TYPES = {"state_oracle": "always", "oracle_memory": "remembered", "oracle_view": "in_view"}

#: Named PPO hyper-parameter sets shared by every observation type (how they were chosen: docs/rl.md).
#: ``sb3``: 4 envs x 256 steps, batch 256, 4 epochs, SB3's defaults otherwise (the first benchmark).
#: ``fast``: 4 envs x 128 steps, batch 128, 10 epochs, learning rate 1e-3, entropy bonus 0.01:
#: more updates per sample, chosen on calibration seeds by the privileged-state agent's headroom.
#: ``steady``: ``fast`` at SB3's default learning rate 3e-4.
PPO_SETTINGS: dict[str, dict[str, Any]] = {
    "sb3": {"n_steps": 256, "batch_size": 256, "n_epochs": 4},
    "fast": {"n_steps": 128, "batch_size": 128, "n_epochs": 10, "learning_rate": 1e-3, "ent_coef": 0.01},
    "steady": {"n_steps": 128, "batch_size": 128, "n_epochs": 10, "learning_rate": 3e-4, "ent_coef": 0.01},
}


#: LSTM sizes of the recurrent types (sb3-contrib ``RecurrentPPO`` policy arguments).
#: ``sb3``: sb3-contrib's default, 256 units and a second LSTM for the critic: the
#: ``pixels_lstm`` baseline as its authors ship it. ``small``: 64 units, one LSTM that
#: the critic reads too (detached, so only the actor's loss trains it); about 4x
#: cheaper per step on this machine's CPU (``gqn_lstm``, 100k steps: about 8 minutes
#: against 35; the feed-forward ``gqn`` agent: 3).
LSTM_POLICIES: dict[str, dict[str, Any]] = {
    "sb3": {"lstm_hidden_size": 256, "shared_lstm": False, "enable_critic_lstm": True},
    "small": {"lstm_hidden_size": 64, "shared_lstm": True, "enable_critic_lstm": False},
}


class ImageOnly(gym.ObservationWrapper):
    """Observe only the egocentric image of a scene env (for the pixel baseline)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = env.observation_space["image"]

    def observation(self, observation: dict) -> np.ndarray:
        """The image."""
        return observation["image"]


def make_vec_env(
    obs_type: str,
    env_id: str,
    num_envs: int,
    seed: int,
    model: Any = None,
    env_kwargs: dict | None = None,
    normalize: bool = True,
    frame_stack: int = 1,
    goal_landmark: bool = False,
    oracle_goal: str | None = None,
    oracle_rays: bool = False,
    plain_keys: tuple[str, ...] = (),
) -> VecEnv:
    """A DummyVecEnv of monitored envs for ``obs_type`` (see the module docstring).

    ``env_id`` is a scene id such as ``GQNMazeScene-S2-v0``; for the GQN types the
    matching ``GQNMaze`` id is used, with ``model`` shared by all sub-envs.

    ``normalize`` (GQN types): standardise each feature of the model's
    observation keys by running statistics (SB3's ``VecNormalize``, observations
    only). The world model's features vary little over an episode next to their
    offsets (the bundled model's running mean moves by about 5e-4 per feature),
    so without it a policy sees a nearly constant input.

    ``frame_stack`` (GQN types): stack the last ``frame_stack`` observations, as
    the ``pixels`` type stacks 4 frames (after standardisation).

    ``goal_landmark`` (``gqn``, ``gqn_lstm``; the observation needs ``patches`` and
    ``landmarks``): replace ``landmarks`` by the one row of it that marks the agent's
    successes (:class:`agents.goal_landmark.GoalLandmark`), before standardisation.

    ``oracle_goal`` (GQN types; a diagnostic): add the goal's privileged position,
    known as that :data:`agents.oracle.GOAL_MODES` entry says
    (:class:`agents.oracle.PrivilegedGoal`). ``oracle_rays`` (GQN types; a
    diagnostic): add the oracle's free distances along 8 rays
    (:class:`agents.oracle.PrivilegedRays`).

    ``plain_keys`` (GQN types): observation keys left out of the standardisation.
    """
    if obs_type not in OBS_TYPES:
        raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
    if oracle_goal is not None and obs_type not in GQN_TYPES:
        raise ValueError(f"oracle_goal is for the GQN types, got {obs_type!r}")
    if oracle_rays and obs_type not in GQN_TYPES:
        raise ValueError(f"oracle_rays is for the GQN types, got {obs_type!r}")
    if goal_landmark and obs_type not in ("gqn", "gqn_lstm"):
        raise ValueError(f"goal_landmark is for the gqn and gqn_lstm types, got {obs_type!r}")
    kwargs = dict(env_kwargs or {})

    def build() -> gym.Env:
        if obs_type in PIXEL_TYPES:
            return ImageOnly(gym.make(f"gqn_env:{env_id}", **kwargs))
        if obs_type in ORACLE_TYPES:
            from agents.oracle import StateOracle

            return StateOracle(gym.make(f"gqn_env:{env_id}", **kwargs), goal=ORACLE_TYPES[obs_type])
        gqn_id = env_id.replace("GQNMazeScene", "GQNMaze")
        env = gym.make(f"gqn_env:{gqn_id}", model=model, emit_frames=obs_type == "gqn_online", **kwargs)
        if oracle_goal is not None:
            from agents.oracle import PrivilegedGoal

            env = PrivilegedGoal(env, goal=oracle_goal)
        if oracle_rays:
            from agents.oracle import PrivilegedRays

            env = PrivilegedRays(env)
        return env

    def factory(i: int) -> Callable[[], gym.Env]:
        def make() -> gym.Env:
            env = Monitor(build(), info_keywords=("is_success",))
            env.reset(seed=seed * 1000 + i)
            return env

        return make

    venv = DummyVecEnv([factory(i) for i in range(num_envs)])
    venv.seed(seed * 1000)
    if obs_type == "pixels":
        return VecFrameStack(venv, 4)
    if goal_landmark:
        from agents.goal_landmark import GoalLandmark

        venv = GoalLandmark(venv)
    if obs_type in GQN_TYPES and normalize:
        keys = [k for k in venv.observation_space.spaces if k != "image" and k not in plain_keys]
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, norm_obs_keys=keys, clip_obs=10.0)
    if obs_type in GQN_TYPES and frame_stack > 1:
        if obs_type == "gqn_online":
            raise ValueError("frame_stack is not supported with gqn_online (its observations are re-encoded in place)")
        # Maps (C, h, w) stack along channels, vectors along their only axis.
        order = {k: "first" if len(space.shape) == 3 else "last" for k, space in venv.observation_space.spaces.items()}
        venv = VecFrameStack(venv, frame_stack, channels_order=order)
    return venv


def fit_key_projection(
    model: Any,
    env_id: str,
    key: str = "patches",
    dims: int = 64,
    scenes: int = 100,
    steps: int = 100,
    env_kwargs: dict | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A whitening PCA of one GQNMaze observation key (:func:`agents.features.fit_projection`).

    Fitted without labels or rewards on walks of :class:`agents.collectors.RandomWalker`
    through ``scenes`` scenes, ``steps`` steps each, every step's ``key`` kept. The scenes
    are the world model's training scenes (:func:`agents.world_model_training.training_seeds`),
    not the RL runs'.
    """
    from agents.collectors import RandomWalker
    from agents.features import fit_projection
    from agents.world_model_training import training_seeds

    gqn_id = env_id.replace("GQNMazeScene", "GQNMaze")
    env = gym.make(f"gqn_env:{gqn_id}", model=model, **{**(env_kwargs or {}), "obs_keys": (key,)})
    walker = RandomWalker(np.random.default_rng(seed))
    samples = []
    try:
        for scene_seed in training_seeds(seed, 0, scenes):
            obs, info = env.reset(seed=scene_seed)
            samples.append(obs[key].reshape(-1))
            for _ in range(steps - 1):
                obs, _, terminated, truncated, info = env.step(walker.act(info))
                samples.append(obs[key].reshape(-1))
                if terminated or truncated:
                    break
    finally:
        env.close()
    return fit_projection(np.stack(samples), dims)


def make_agent(
    obs_type: str,
    venv: VecEnv,
    settings: str | dict[str, Any] = "fast",
    seed: int = 0,
    lstm: str = "sb3",
    **kwargs: Any,
):
    """The PPO agent for ``obs_type`` with the shared hyper-parameters ``settings``.

    ``pixels``: ``CnnPolicy``; ``pixels_lstm``: sb3-contrib ``RecurrentPPO`` with
    ``CnnLstmPolicy``; ``gqn_lstm``: ``RecurrentPPO`` with ``MultiInputLstmPolicy``;
    the oracles: ``MlpPolicy``; the other GQN types: ``MultiInputPolicy``; every GQN
    type reads its observation with :class:`agents.features.GQNMazeExtractor`.
    ``lstm`` names the recurrent types' LSTM (:data:`LSTM_POLICIES`).
    ``kwargs`` go to the algorithm (``tensorboard_log``, ``verbose``, ...).
    """
    if obs_type not in OBS_TYPES:
        raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
    if isinstance(settings, str):
        if settings not in PPO_SETTINGS:
            raise ValueError(f"settings must be one of {sorted(PPO_SETTINGS)} or a dict, got {settings!r}")
        settings = PPO_SETTINGS[settings]
    if lstm not in LSTM_POLICIES:
        raise ValueError(f"lstm must be one of {sorted(LSTM_POLICIES)}, got {lstm!r}")
    options = {"seed": seed, "device": "cpu", "verbose": 0, **settings, **kwargs}
    if obs_type in ("pixels_lstm", "gqn_lstm"):
        try:
            from sb3_contrib import RecurrentPPO
        except ImportError as err:  # the rl extra
            raise ImportError(f"{obs_type} needs sb3-contrib: pip install 'gqn-gym[rl]'") from err
        policy_kwargs = {**LSTM_POLICIES[lstm], **options.pop("policy_kwargs", {})}
        if obs_type == "pixels_lstm":
            return RecurrentPPO("CnnLstmPolicy", venv, policy_kwargs=policy_kwargs, **options)
        from agents.features import GQNMazeExtractor

        policy_kwargs = {"features_extractor_class": GQNMazeExtractor, **policy_kwargs}
        return RecurrentPPO("MultiInputLstmPolicy", venv, policy_kwargs=policy_kwargs, **options)
    from stable_baselines3 import PPO

    if obs_type == "pixels":
        return PPO("CnnPolicy", venv, **options)
    if obs_type in ORACLE_TYPES:
        return PPO("MlpPolicy", venv, **options)
    from agents.features import GQNMazeExtractor

    policy_kwargs = {"features_extractor_class": GQNMazeExtractor, **options.pop("policy_kwargs", {})}
    return PPO("MultiInputPolicy", venv, policy_kwargs=policy_kwargs, **options)


class SuccessCurve(BaseCallback):
    """Record ``(timestep, success, wall-clock seconds)`` at every episode end, for learning curves."""

    def __init__(self) -> None:
        super().__init__()
        self.timesteps: list[int] = []
        self.successes: list[float] = []
        self.seconds: list[float] = []
        self._start = 0.0

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done:
                self.timesteps.append(self.num_timesteps)
                self.successes.append(float(info.get("is_success", False)))
                self.seconds.append(time.perf_counter() - self._start)
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
        obs = {k: np.stack([o[k] for o in current]) for k in current[0]}
        self.model._last_obs = venv.normalize_obs(obs) if isinstance(venv, VecNormalize) else obs


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


def steps_to_rolling_threshold(
    timesteps: list[int], successes: list[float], threshold: float, window: int = 50
) -> float:
    """First env step at which the success rate of the last ``window`` episodes reaches ``threshold``.

    A rolling window over episodes (as SB3's logged ``success_rate``) rather than a
    fixed bin: one lucky bin of a few episodes does not count. inf if never (or
    fewer than ``window`` episodes ended).
    """
    if len(successes) < window:
        return float("inf")
    rates = np.convolve(np.asarray(successes, dtype=float), np.ones(window) / window, mode="valid")
    hits = np.flatnonzero(rates >= threshold)
    return float(timesteps[hits[0] + window - 1]) if hits.size else float("inf")


def steps_to_threshold(curve: np.ndarray, total: int, threshold: float) -> float:
    """Steps until the binned success rate first reaches ``threshold`` (inf if never)."""
    bins = len(curve)
    hits = np.flatnonzero(np.nan_to_num(curve, nan=0.0) >= threshold)
    return float((hits[0] + 1) * total / bins) if hits.size else float("inf")


def find_wrapper(venv: VecEnv, cls: type) -> Any:
    """The first VecEnv wrapper of type ``cls`` in ``venv``'s chain (``venv`` itself included), or None."""
    while venv is not None:
        if isinstance(venv, cls):
            return venv
        venv = getattr(venv, "venv", None)
    return None


def save_agent(
    agent: Any, out_dir: str | Path, world_model: Any = None, obs_type: str = "gqn", env_kwargs: dict | None = None
) -> Path:
    """Save an agent as ``out_dir/policy.zip`` with its world model beside it (``world_model.pt``).

    The world model is saved as weights and config (atomic, checksummed, loadable without
    unpickling code), so :func:`load_agent` restores the pair and the policy sees the
    features it was trained on. ``agent.json`` records the observation type, the
    algorithm and the env kwargs the agent was trained with (``obs_keys``, ...), so
    the agent can be evaluated on the observation it knows.
    """
    from world_model import save_checkpoint
    from world_model.atomic import atomic_path

    if obs_type not in OBS_TYPES:
        raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    agent.save(out / "policy.zip")
    if world_model is not None:
        save_checkpoint(out / "world_model.pt", model=world_model)
    normalizer = agent.get_vec_normalize_env()
    stats = {}
    if normalizer is not None:  # plain arrays, no pickle: loadable without running code
        for key, rms in normalizer.obs_rms.items():
            stats |= {f"{key}.mean": rms.mean, f"{key}.var": rms.var, f"{key}.count": np.array(rms.count)}
        with atomic_path(out / "obs_normalization.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **stats)
    from agents.goal_landmark import GoalLandmark

    goal = find_wrapper(agent.get_env(), GoalLandmark)
    if goal is not None:
        with atomic_path(out / "goal_landmark.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **goal.state())
    info = {
        "obs_type": obs_type,
        "algorithm": type(agent).__name__,
        "env_kwargs": dict(env_kwargs or {}),
        "goal_landmark": goal is not None,
    }
    with atomic_path(out / "agent.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return out


def restore_normalization(venv: VecEnv, out_dir: str | Path) -> VecEnv:
    """Give ``venv``'s ``VecNormalize`` the statistics :func:`save_agent` kept, frozen (for evaluation).

    A :class:`agents.goal_landmark.GoalLandmark` in the chain gets its saved statistics too.
    """
    from agents.goal_landmark import GoalLandmark

    goal = find_wrapper(venv, GoalLandmark)
    if goal is not None:
        goal_path = Path(out_dir) / "goal_landmark.npz"
        if not goal_path.exists():
            raise FileNotFoundError(f"{goal_path} is missing: the agent in {out_dir} was saved without GoalLandmark")
        with np.load(goal_path, allow_pickle=False) as state:
            goal.load_state(dict(state))
    path = Path(out_dir) / "obs_normalization.npz"
    if not isinstance(venv, VecNormalize):
        return venv
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the agent in {out_dir} was saved without its observation statistics"
        )
    with np.load(path, allow_pickle=False) as stats:
        for key, rms in venv.obs_rms.items():
            rms.mean, rms.var, rms.count = stats[f"{key}.mean"], stats[f"{key}.var"], float(stats[f"{key}.count"])
    venv.training = False
    return venv


def agent_info(out_dir: str | Path) -> dict[str, Any]:
    """What :func:`save_agent` recorded in ``agent.json``: ``obs_type``, ``algorithm``, ``env_kwargs``.

    Folders saved without it hold a PPO agent on GQNMaze (with a world model) or on pixels.
    """
    path = Path(out_dir) / "agent.json"
    if path.exists():
        return json.loads(path.read_text())
    has_model = (Path(out_dir) / "world_model.pt").exists()
    return {"obs_type": "gqn" if has_model else "pixels", "algorithm": "PPO", "env_kwargs": {}}


def load_agent(out_dir: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """Load what :func:`save_agent` wrote: ``(agent, world model or None)``."""
    from stable_baselines3 import PPO

    from world_model import load_model

    out = Path(out_dir)
    if agent_info(out)["algorithm"] == "RecurrentPPO":
        from sb3_contrib import RecurrentPPO

        agent = RecurrentPPO.load(out / "policy.zip", device=device)
    else:
        agent = PPO.load(out / "policy.zip", device=device)
    model_path = out / "world_model.pt"
    model = load_model(model_path, device=device).eval() if model_path.exists() else None
    return agent, model
