"""Scene environments. Importing this package does not start OpenGL.

``GQNMazeScene`` lives in :mod:`gqn_env.envs.maze_scene`, which imports MiniWorld;
it is loaded on first attribute access.
"""

from __future__ import annotations

from typing import Any

from gqn_env.envs.viewpoint import VIEWPOINT_DIM, Pose, SceneBounds, pose_to_viewpoint, viewpoint_to_pose

__all__ = ["VIEWPOINT_DIM", "GQNMazeScene", "Pose", "SceneBounds", "pose_to_viewpoint", "viewpoint_to_pose"]


def __getattr__(name: str) -> Any:
    if name == "GQNMazeScene":
        from gqn_env.envs.maze_scene import GQNMazeScene

        return GQNMazeScene
    raise AttributeError(f"module 'gqn_env.envs' has no attribute {name!r}")
