"""Gymnasium ids of the project's environments.

Gymnasium 1.x has no plugin auto-registration: ``import gqn_env`` calls
:func:`register_envs`, and ``gym.make("gqn_env:GQNMazeScene-v0")`` imports the
package itself. Entry points are strings, so registering imports no OpenGL.

The ids are registered without a Gymnasium-level ``max_episode_steps``: the scene
enforces its own limit (it truncates episodes and scales the goal reward by it).
``gym.make(id, max_episode_steps=T)`` keeps ``T`` for its ``TimeLimit`` wrapper and
never passes it to the env, so the entry points read it from that ``gym.make`` call
(:func:`max_episode_steps_from_gym_make`) and the scene uses the same ``T``.
"""

from __future__ import annotations

import numbers
from types import FrameType

import gymnasium as gym

#: Size family: suffix -> maze rows/cols. ``-v0`` without a suffix is 3x3.
MAZE_SIZES: dict[str, int] = {"S2": 2, "S3": 3, "S4": 4}

SCENE_ENTRY_POINT = "gqn_env.envs.maze_scene:GQNMazeScene"
GQN_MAZE_ENTRY_POINT = "gqn_env.envs.gqn_maze:make_gqn_maze"


def check_max_episode_steps(value: object) -> int | None:
    """Return ``value`` as an int step limit (``None`` stays ``None``: the scene's default).

    Raises:
        ValueError: If ``value`` is not a positive integer or ``None``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            "max_episode_steps must be a positive integer, or None for the scene's default "
            f"(24 * num_rows * num_cols), got {value!r}"
        )
    return int(value)


def max_episode_steps_from_gym_make(frame: FrameType | None) -> int | None:
    """The step limit that the ``gym.make`` call running in ``frame`` gives its ``TimeLimit``.

    ``gym.make(id, max_episode_steps=T)`` binds ``T`` to its own parameter and wraps the
    env in ``TimeLimit(env, T)`` after building it; the env never sees ``T``. An entry
    point passes its caller's frame (``sys._getframe(1)``) to learn ``T`` before it
    builds the scene, so the scene's limit (truncation and reward) is the same ``T``.

    Args:
        frame: The entry point's caller frame.

    Returns:
        ``T`` if ``frame`` is ``gym.make``'s and it applies a ``TimeLimit`` (its argument,
        else the spec's ``max_episode_steps``); ``None`` otherwise, including for
        ``max_episode_steps=-1`` (Gymnasium's "no TimeLimit"): the scene's default then.

    Raises:
        ValueError: If ``T`` is not a positive integer (before any scene is built).
    """
    if frame is None or frame.f_code is not gym.make.__code__:
        return None
    value = frame.f_locals.get("max_episode_steps")
    if value is None:
        value = getattr(frame.f_locals.get("env_spec"), "max_episode_steps", None)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and value == -1:
        return None
    return check_max_episode_steps(value)


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
