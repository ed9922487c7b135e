"""Gymnasium ids of the project's environments.

Gymnasium 1.x has no plugin auto-registration: ``import gqn_env`` calls
:func:`register_envs`, and ``gym.make("gqn_env:GQNMazeScene-v0")`` imports the
package itself. Entry points are strings, so registering imports no OpenGL.
"""

from __future__ import annotations

import gymnasium as gym

#: Size family: suffix -> maze rows/cols. ``-v0`` without a suffix is 3x3.
MAZE_SIZES: dict[str, int] = {"S2": 2, "S3": 3, "S4": 4}

SCENE_ENTRY_POINT = "gqn_env.envs.maze_scene:GQNMazeScene"
GQN_MAZE_ENTRY_POINT = "gqn_env.envs.gqn_maze:make_gqn_maze"


def scene_ids() -> list[str]:
    """All registered ids of the raw scene env."""
    return ["GQNMazeScene-v0"] + [f"GQNMazeScene-{suffix}-v0" for suffix in MAZE_SIZES]


def gqn_maze_ids() -> list[str]:
    """All registered ids of the env with the GQN representation as observation."""
    return ["GQNMaze-v0"] + [f"GQNMaze-{suffix}-v0" for suffix in MAZE_SIZES]


def register_envs() -> None:
    """Register every id (idempotent)."""
    if "GQNMazeScene-v0" in gym.registry:
        return
    gym.register(id="GQNMazeScene-v0", entry_point=SCENE_ENTRY_POINT, kwargs={"num_rows": 3, "num_cols": 3})
    gym.register(id="GQNMaze-v0", entry_point=GQN_MAZE_ENTRY_POINT, kwargs={"num_rows": 3, "num_cols": 3})
    for suffix, size in MAZE_SIZES.items():
        kwargs = {"num_rows": size, "num_cols": size}
        gym.register(id=f"GQNMazeScene-{suffix}-v0", entry_point=SCENE_ENTRY_POINT, kwargs=kwargs)
        gym.register(id=f"GQNMaze-{suffix}-v0", entry_point=GQN_MAZE_ENTRY_POINT, kwargs=kwargs)
