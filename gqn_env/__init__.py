"""gqn-gym: MiniWorld maze scenes for agents with a Generative Query Network world model.

``import gqn_env`` sets up headless rendering (Mesa EGL when there is no display)
and registers the environment ids with Gymnasium::

    import gymnasium as gym
    import gqn_env

    env = gym.make("GQNMazeScene-S2-v0", image_size=64)
"""

from __future__ import annotations

from gqn_env import _headless

_headless.configure()

from gqn_env._headless import OpenGLUnavailableError  # noqa: E402
from gqn_env.envs.viewpoint import VIEWPOINT_DIM, Pose  # noqa: E402
from gqn_env.registration import gqn_maze_ids, register_envs, scene_ids  # noqa: E402

register_envs()

__version__ = "0.1.0"
__all__ = ["VIEWPOINT_DIM", "OpenGLUnavailableError", "Pose", "gqn_maze_ids", "register_envs", "scene_ids"]
