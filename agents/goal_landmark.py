"""A compact memory of the goal for GQN agents, keyed by the agent's own successes.

``GQNMaze``'s ``landmarks`` key remembers, for each of the world model's 64
feature channels, where that feature was last at its peak (a ``(64, 7)`` table).
The goal is among them (a red box is the scene's only red object), but a policy
given the whole table has to find that one row among 64 by trial and error, and
PPO does not within 100k steps (docs/rl.md, step 7).

:class:`GoalLandmark` finds the row from the agent's experience instead. At the
end of every successful episode the agent has just walked up to the goal, with it
in view; the channel whose response in those last ``window`` frames stands
furthest above its usual level (in standard deviations over every frame the
agent has seen) is the one that answers to the goal. The wrapper keeps those running statistics, and
replaces ``landmarks`` by an estimate of where that feature is now, relative to
the agent (:data:`FIELDS`): the same kind of memory as the ``oracle_memory``
reference's, read from the world model's features with no labels, only the
success signal the agent is trained on anyway.

A ``landmarks`` row says where the agent stood when the feature was at its
peak, which way it faced and in which patch column the feature was. The feature
lies along that column's line of sight; ``depth`` is how far along it is taken
to be (viewpoint units, where the scene's floor spans -1 to 1). On 30 walks of
held-out S2 scenes, with the goal seen earlier and out of view now, the estimate
from a channel that answers to the goal correlates with the goal's true position
at 0.84 to 0.88 (forward and sideways; channels 22, 44 and 51 of the bundled
model) with ``depth`` 1, against 0.42 to 0.47 for the standing point alone;
from channels that do not answer to the goal, 0.2 to 0.5.

Until ``min_successes`` episodes have succeeded no channel is chosen and the
key is all zeros.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from gqn_env.envs.privileged import HALF_FOV

#: Observation key added by :class:`GoalLandmark`.
KEY = "goal_landmark"
#: Its fields: the chosen channel's peak response; the estimated position of the feature,
#: forward and right of the agent (viewpoint units), its distance, the cosine and sine of
#: its bearing (right positive); 1 once a channel is chosen (all zeros before).
FIELDS = ("peak", "forward", "right", "distance", "cos_bearing", "sin_bearing", "known")


class GoalLandmark(VecEnvWrapper):
    """Replace a GQNMaze VecEnv's ``landmarks`` key by the row of the channel that marks success.

    Args:
        venv: A VecEnv of ``GQNMaze`` envs whose observation has ``patches`` and ``landmarks``.
        min_successes: Successful episodes needed before a channel is chosen.
        keep_landmarks: Keep the full ``landmarks`` table beside the new key.
    """

    def __init__(
        self,
        venv: VecEnv,
        min_successes: int = 5,
        window: int = 10,
        depth: float = 1.0,
        keep_landmarks: bool = False,
    ) -> None:
        space = venv.observation_space
        if not isinstance(space, gym.spaces.Dict) or not {"patches", "landmarks"} <= set(space.spaces):
            raise ValueError(f"GoalLandmark needs 'patches' and 'landmarks' in a Dict observation space, got {space}")
        if min_successes < 1 or window < 1:
            raise ValueError(f"min_successes and window must be at least 1, got {min_successes} and {window}")
        channels = space["landmarks"].shape[0]
        spaces = {k: v for k, v in space.spaces.items() if keep_landmarks or k != "landmarks"}
        spaces[KEY] = gym.spaces.Box(-np.inf, np.inf, (len(FIELDS),), dtype=np.float32)
        super().__init__(venv, observation_space=gym.spaces.Dict(spaces))
        self.min_successes = min_successes
        self.window = window
        self.depth = depth
        # Each env's last ``window`` frames' channel peaks (a ring), oldest overwritten first.
        self.recent = np.zeros((venv.num_envs, window, channels))
        self.recent_count = np.zeros(venv.num_envs, dtype=np.int64)
        self.keep_landmarks = keep_landmarks
        # Running sums of each channel's strongest patch response: every frame, and final frames of successes.
        self.frames = 0
        self.sum = np.zeros(channels)
        self.sum_sq = np.zeros(channels)
        self.successes = 0
        self.success_sum = np.zeros(channels)

    @property
    def channel(self) -> int:
        """The chosen channel, or -1 before ``min_successes`` successes."""
        if self.successes < self.min_successes or self.frames < 2:
            return -1
        mean = self.sum / self.frames
        std = np.sqrt(np.maximum(self.sum_sq / self.frames - mean**2, 0.0)) + 1e-8
        return int(np.argmax((self.success_sum / self.successes - mean) / std))

    def estimate(self, row: np.ndarray) -> np.ndarray:
        """``(..., 7)`` ``landmarks`` rows -> ``(..., 7)`` :data:`FIELDS` (``known`` = 1)."""
        peak, forward, right, cos_turn, sin_turn, column = (row[..., i] for i in range(6))
        # The patch column's line of sight, as an angle to the right of the heading now.
        sight = -np.arctan2(sin_turn, cos_turn) + column * 2 * HALF_FOV
        forward = forward + self.depth * np.cos(sight)
        right = right + self.depth * np.sin(sight)
        distance = np.hypot(forward, right)
        bearing = np.arctan2(right, forward)
        known = np.ones_like(peak)
        return np.stack([peak, forward, right, distance, np.cos(bearing), np.sin(bearing), known], axis=-1)

    def _transform(self, obs: dict[str, np.ndarray], channel: int) -> dict[str, np.ndarray]:
        landmarks = obs["landmarks"]
        if channel >= 0:
            goal = self.estimate(landmarks[..., channel, :]).astype(np.float32)
        else:
            goal = np.zeros((*landmarks.shape[:-2], len(FIELDS)), dtype=np.float32)
        out = {k: v for k, v in obs.items() if self.keep_landmarks or k != "landmarks"}
        out[KEY] = goal
        return out

    @staticmethod
    def _peaks(patches: np.ndarray) -> np.ndarray:
        """``(N, c, h, w)`` -> ``(N, c)``: each channel's strongest patch."""
        return patches.reshape(*patches.shape[:2], -1).max(axis=-1)

    def _count_frames(self, peaks: np.ndarray) -> None:
        self.frames += len(peaks)
        self.sum += peaks.sum(axis=0)
        self.sum_sq += (peaks.astype(np.float64) ** 2).sum(axis=0)

    def _remember(self, env: int, peaks: np.ndarray) -> None:
        self.recent[env, self.recent_count[env] % self.window] = peaks
        self.recent_count[env] += 1

    def reset(self) -> dict[str, np.ndarray]:
        """Reset every env; the statistics are kept (they belong to the agent, not the episode)."""
        obs = self.venv.reset()
        peaks = self._peaks(obs["patches"])
        self._count_frames(peaks)
        self.recent_count[:] = 0
        for env, row in enumerate(peaks):
            self._remember(env, row)
        return self._transform(obs, self.channel)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step, update the statistics from the new frames and any successful final frame, transform."""
        obs, rewards, dones, infos = self.venv.step_wait()
        peaks = self._peaks(obs["patches"])
        self._count_frames(peaks)
        for env, (done, info) in enumerate(zip(dones, infos, strict=True)):
            if done and "terminal_observation" in info:  # obs[env] is already the next episode's first frame
                self._remember(env, self._peaks(info["terminal_observation"]["patches"][None])[0])
                if info.get("is_success"):
                    kept = min(self.recent_count[env], self.window)
                    self.successes += 1
                    self.success_sum += self.recent[env, :kept].mean(axis=0)
                self.recent_count[env] = 0
            self._remember(env, peaks[env])
        channel = self.channel
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = self._transform(info["terminal_observation"], channel)
        return self._transform(obs, channel), rewards, dones, infos

    def state(self) -> dict[str, np.ndarray]:
        """The statistics as plain arrays (saved beside an agent, loadable without pickle)."""
        return {
            "frames": np.array(self.frames),
            "sum": self.sum,
            "sum_sq": self.sum_sq,
            "successes": np.array(self.successes),
            "success_sum": self.success_sum,
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""
        if state["sum"].shape != self.sum.shape:
            raise ValueError(f"GoalLandmark state has {state['sum'].shape[0]} channels, this env {self.sum.shape[0]}")
        self.frames, self.successes = int(state["frames"]), int(state["successes"])
        self.sum, self.sum_sq, self.success_sum = (
            np.array(state[k], dtype=np.float64) for k in ("sum", "sum_sq", "success_sum")
        )
