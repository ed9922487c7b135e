"""The ``state_oracle`` reference observation: privileged state instead of pixels.

Not an agent anyone would deploy: it reads the goal's position, the walls and the objects
straight from the scene's geometry (:mod:`gqn_env.envs.privileged`). It bounds
what any observation can buy on a benchmark: if PPO with perfect state learns no
faster than PPO on pixels, perception is not what limits learning there, and no
learned representation can show a gain.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gqn_env.envs import privileged

#: Rays for the free distances (walls and objects), relative to the heading (radians): every 45 degrees.
RAY_ANGLES = np.arange(8) * (2 * math.pi / 8)


class StateOracle(gym.ObservationWrapper):
    """Observe privileged state as one float32 vector (length :attr:`size`).

    Layout::

        [viewpoint (7),
         goal forward, goal left, goal distance (3; metres / scene side),
         cos, sin of the goal's bearing (2),
         free distance to the nearest wall or object along 8 rays from the heading, counter-clockwise
         (8; metres / room side, clipped to 2)]

    Args:
        env: A :class:`gqn_env.envs.maze_scene.GQNMazeScene` (possibly wrapped).
    """

    size = 7 + 3 + 2 + len(RAY_ANGLES)

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Dict) or "viewpoint" not in env.observation_space.spaces:
            raise ValueError(
                f"StateOracle wraps a scene env observing a Dict with 'viewpoint', got {env.observation_space}"
            )
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.size,), dtype=np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        """The privileged state of the scene after this step."""
        scene = self.env.unwrapped
        side = max(scene.max_x - scene.min_x, scene.max_z - scene.min_z)
        forward, left = privileged.goal_egocentric(scene)
        distance = math.hypot(forward, left)
        angle = math.atan2(left, forward)
        walls = privileged.obstacle_distances(scene, RAY_ANGLES, max_distance=2 * scene.room_size) / scene.room_size
        goal = [forward / side, left / side, distance / side, math.cos(angle), math.sin(angle)]
        return np.concatenate([observation["viewpoint"], goal, walls]).astype(np.float32)
