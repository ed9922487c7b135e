"""The oracle reference observations: privileged state instead of pixels.

Not agents anyone would deploy: they read the goal's position, the walls and the
objects straight from the scene's geometry (:mod:`gqn_env.envs.privileged`). They
bound what an observation can buy on a benchmark: if PPO with perfect state
learns no faster than PPO on pixels, perception is not what limits learning
there, and no learned representation can show a gain.

Three oracles differ only in when they know where the goal is (``goal=``):

* ``"always"`` (``state_oracle``): from the first step, before it was ever seen;
  no observation of the agent's own can give that;
* ``"remembered"`` (``oracle_memory``): from the first step the goal was in view
  on, for the rest of the episode: perfect perception and perfect memory;
* ``"in_view"`` (``oracle_view``): only while it is in view: perfect perception,
  no memory.

The gaps between them split the headroom into what seeing buys and what
remembering buys.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gqn_env.envs import privileged

#: Rays for the free distances (walls and objects), relative to the heading (radians): every 45 degrees.
RAY_ANGLES = np.arange(8) * (2 * math.pi / 8)

#: When each oracle knows the goal (module docstring).
GOAL_MODES = ("always", "remembered", "in_view")


class StateOracle(gym.ObservationWrapper):
    """Observe privileged state as one float32 vector (length :attr:`size`).

    Layout::

        [viewpoint (7),
         goal forward, goal left, goal distance (3; metres / scene side),
         cos, sin of the goal's bearing (2),
         free distance to the nearest wall or object along 8 rays from the heading, counter-clockwise
         (8; metres / room side, clipped to 2),
         goal known (1; only when ``goal`` is not ``"always"``)]

    While the goal is not known the five goal entries are 0.

    Args:
        env: A :class:`gqn_env.envs.maze_scene.GQNMazeScene` (possibly wrapped).
        goal: When the goal's position is observed, one of :data:`GOAL_MODES`.
    """

    def __init__(self, env: gym.Env, goal: str = "always") -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Dict) or "viewpoint" not in env.observation_space.spaces:
            raise ValueError(
                f"StateOracle wraps a scene env observing a Dict with 'viewpoint', got {env.observation_space}"
            )
        if goal not in GOAL_MODES:
            raise ValueError(f"goal must be one of {GOAL_MODES}, got {goal!r}")
        self.goal = goal
        self.size = 7 + 3 + 2 + len(RAY_ANGLES) + (goal != "always")
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.size,), dtype=np.float32)
        self._seen = False  # goal in view at some step of this episode

    def reset(self, **kwargs) -> tuple[np.ndarray, dict]:
        """Reset the scene and forget the goal."""
        self._seen = False
        return super().reset(**kwargs)

    def observation(self, observation: dict) -> np.ndarray:
        """The privileged state of the scene after this step."""
        scene = self.env.unwrapped
        self._seen, goal, known = goal_state(scene, self.goal, self._seen)
        flag = [] if self.goal == "always" else [float(known)]
        return np.concatenate([observation["viewpoint"], goal, free_distances(scene), flag]).astype(np.float32)


def free_distances(scene) -> np.ndarray:
    """Free distance to the nearest wall or object along each of :data:`RAY_ANGLES` (room sides, clipped to 2)."""
    return privileged.obstacle_distances(scene, RAY_ANGLES, max_distance=2 * scene.room_size) / scene.room_size


def goal_state(scene, mode: str, seen: bool) -> tuple[bool, np.ndarray, bool]:
    """``(seen now, goal fields (5,), known)`` of a scene for one of :data:`GOAL_MODES`.

    The fields are the goal's forward and left offsets and distance (scene sides),
    and the cosine and sine of its bearing; zeros while it is not known.
    """
    visible = mode != "always" and privileged.goal_visible(scene)
    seen = seen or visible
    known = mode == "always" or visible or (mode == "remembered" and seen)
    goal = np.zeros(5)
    if known:
        side = max(scene.max_x - scene.min_x, scene.max_z - scene.min_z)
        forward, left = privileged.goal_egocentric(scene)
        angle = math.atan2(left, forward)
        goal[:] = [forward / side, left / side, math.hypot(forward, left) / side, math.cos(angle), math.sin(angle)]
    return seen, goal, known


class PrivilegedGoal(gym.ObservationWrapper):
    """Add the goal's privileged position to a Dict observation (key ``oracle_goal``): a diagnostic.

    For asking whether a policy that reads GQNMaze's observation could use a goal
    memory at all: the same fields as :class:`StateOracle`'s goal (5) and its
    ``known`` flag, known as ``goal`` says. Not an agent anyone would deploy.
    """

    def __init__(self, env: gym.Env, goal: str = "remembered") -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Dict):
            raise ValueError(f"PrivilegedGoal wraps an env observing a Dict, got {env.observation_space}")
        if goal not in GOAL_MODES:
            raise ValueError(f"goal must be one of {GOAL_MODES}, got {goal!r}")
        self.goal = goal
        self.observation_space = spaces.Dict(
            {**env.observation_space.spaces, "oracle_goal": spaces.Box(-np.inf, np.inf, (6,), dtype=np.float32)}
        )
        self._seen = False

    def reset(self, **kwargs) -> tuple[dict, dict]:
        """Reset the scene and forget the goal."""
        self._seen = False
        return super().reset(**kwargs)

    def observation(self, observation: dict) -> dict:
        """The observation with ``oracle_goal`` added."""
        self._seen, goal, known = goal_state(self.env.unwrapped, self.goal, self._seen)
        return {**observation, "oracle_goal": np.append(goal, float(known)).astype(np.float32)}


class PrivilegedRays(gym.ObservationWrapper):
    """Add the oracle's free distances along 8 rays to a Dict observation (key ``oracle_rays``): a diagnostic.

    For asking how much of the perception oracle's lead over a policy on
    GQNMaze's observation comes from seeing obstacles all round (behind and
    beside the agent too, where no camera looks): :class:`StateOracle`'s ray
    fields (:func:`free_distances`). Not an agent anyone would deploy.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Dict):
            raise ValueError(f"PrivilegedRays wraps an env observing a Dict, got {env.observation_space}")
        rays = spaces.Box(0.0, 2.0, (len(RAY_ANGLES),), dtype=np.float32)
        self.observation_space = spaces.Dict({**env.observation_space.spaces, "oracle_rays": rays})

    def observation(self, observation: dict) -> dict:
        """The observation with ``oracle_rays`` added."""
        return {**observation, "oracle_rays": free_distances(self.env.unwrapped).astype(np.float32)}
