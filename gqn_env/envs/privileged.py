"""Privileged ground truth of a maze scene: what an agent never observes.

Used by the ``state_oracle`` reference agent (:mod:`agents.oracle`) and by the
probe benchmarks, which ask how much of it a learned observation carries. All
quantities are computed from the scene's geometry (MiniWorld's wall segments,
the goal entity, the doorways recorded when the maze was built), never from
pixels.

Egocentric conventions: a **bearing** is the angle from the agent's heading to
a point, in radians in [-pi, pi), positive to the left (the yaw convention of
:mod:`gqn_env.envs.viewpoint`); **forward** and **left** are coordinates in
metres along the heading and 90 degrees to its left.

This module imports numpy only; it reads attributes of a built
:class:`gqn_env.envs.maze_scene.GQNMazeScene` (``agent``, ``goal``,
``wall_segs``, ``doorways``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gqn_env.envs.viewpoint import wrap_angle

#: Horizontal half field of view of the square egocentric camera (MiniWorld's fov_y is 60 degrees).
HALF_FOV = math.radians(30.0)


def _agent_xz(scene: Any) -> np.ndarray:
    return np.array([scene.agent.pos[0], scene.agent.pos[2]], dtype=np.float64)


def egocentric(scene: Any, point_xz: np.ndarray) -> tuple[float, float]:
    """``(forward, left)`` metres of a floor point ``(x, z)`` in the agent's frame."""
    d = np.asarray(point_xz, dtype=np.float64) - _agent_xz(scene)
    yaw = float(scene.agent.dir)
    # MiniWorld's heading is (cos yaw, -sin yaw) in (x, z); left of it is (-sin yaw, -cos yaw).
    forward = d[0] * math.cos(yaw) - d[1] * math.sin(yaw)
    left = -d[0] * math.sin(yaw) - d[1] * math.cos(yaw)
    return float(forward), float(left)


def bearing(scene: Any, point_xz: np.ndarray) -> float:
    """Angle from the agent's heading to a floor point, radians, positive to the left."""
    forward, left = egocentric(scene, point_xz)
    return wrap_angle(math.atan2(left, forward))


def _ray_directions(scene: Any, angles: np.ndarray) -> np.ndarray:
    """Unit directions ``(R, 2)`` in (x, z) of rays at ``angles`` (radians) from the agent's heading."""
    yaws = float(scene.agent.dir) + np.asarray(angles, dtype=np.float64)
    return np.stack([np.cos(yaws), -np.sin(yaws)], axis=1)  # MiniWorld's heading is (cos yaw, -sin yaw)


def ray_distances(scene: Any, angles: np.ndarray, max_distance: float = 10.0) -> np.ndarray:
    """Distance from the agent to the nearest wall along rays at ``angles`` (radians, relative to the heading).

    Rays see walls only (objects do not block them); a ray that hits nothing
    within ``max_distance`` metres returns ``max_distance``.

    Returns:
        float64 ``(len(angles),)``.
    """
    origin, dirs = _agent_xz(scene), _ray_directions(scene, angles)  # (2,), (R, 2)
    segs = np.asarray(scene.wall_segs, dtype=np.float64)[:, :, [0, 2]]  # (W, 2 ends, 2)
    a, e = segs[:, 0], segs[:, 1] - segs[:, 0]  # (W, 2): start, extent
    # Solve origin + t * dir = a + s * e for every (ray, wall): 2x2 systems by Cramer's rule.
    denom = dirs[:, None, 0] * -e[None, :, 1] + dirs[:, None, 1] * e[None, :, 0]  # (R, W)
    rel = a[None] - origin  # (1, W, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rel[..., 0] * -e[None, :, 1] + rel[..., 1] * e[None, :, 0]) / denom  # (R, W)
        s = (dirs[:, None, 0] * rel[..., 1] - dirs[:, None, 1] * rel[..., 0]) / denom  # (R, W)
    hit = (np.abs(denom) > 1e-12) & (t > 0) & (s >= 0) & (s <= 1)
    return np.minimum(np.where(hit, t, np.inf).min(axis=1), max_distance)


def obstacle_distances(scene: Any, angles: np.ndarray, max_distance: float = 10.0) -> np.ndarray:
    """Like :func:`ray_distances`, but the rays also stop at objects (each a circle of its entity radius).

    The goal counts as an object. This is the free distance the agent could see
    along each ray: walls and objects both block its moves.
    """
    distances = ray_distances(scene, angles, max_distance)
    origin, dirs = _agent_xz(scene), _ray_directions(scene, angles)  # (2,), (R, 2)
    entities = [e for e in scene.entities if e is not scene.agent]
    if not entities:
        return distances
    centres = np.array([[e.pos[0], e.pos[2]] for e in entities]) - origin  # (E, 2)
    radii = np.array([e.radius for e in entities])  # (E,)
    along = dirs @ centres.T  # (R, E): distance along each ray to the closest approach
    across_sq = (centres**2).sum(axis=1)[None] - along**2  # (R, E): squared miss distance
    inside = radii[None] ** 2 - across_sq
    with np.errstate(invalid="ignore"):
        t = along - np.sqrt(inside)
    hit = (inside >= 0) & (t > 0)
    return np.minimum(distances, np.where(hit, t, np.inf).min(axis=1))


def goal_visible(scene: Any) -> bool:
    """Whether the goal's centre is inside the camera's horizontal field of view with no wall in between."""
    goal = np.array([scene.goal.pos[0], scene.goal.pos[2]])
    angle = bearing(scene, goal)
    if abs(angle) > HALF_FOV:
        return False
    distance = float(np.linalg.norm(goal - _agent_xz(scene)))
    return bool(ray_distances(scene, np.array([angle]), max_distance=distance + 1.0)[0] > distance)


def goal_visible_from(scene: Any, poses: np.ndarray) -> np.ndarray:
    """:func:`goal_visible` from each pose ``(x, z, yaw[, pitch])`` of ``poses``, ``(N,)`` bool.

    The agent is moved to each pose and put back where it was.
    """
    agent = scene.agent
    saved = (agent.pos.copy(), agent.dir)
    try:
        flags = []
        for x, z, yaw, *_ in np.asarray(poses, dtype=np.float64):
            agent.pos, agent.dir = np.array([x, 0.0, z]), float(yaw)
            flags.append(goal_visible(scene))
        return np.array(flags, dtype=bool)
    finally:
        agent.pos, agent.dir = saved


def nearest_doorway(scene: Any) -> tuple[float, float]:
    """``(distance, bearing)`` of the nearest doorway centre (``(inf, 0)`` in a one-room maze)."""
    if not scene.doorways:
        return math.inf, 0.0
    points = np.asarray(scene.doorways, dtype=np.float64)  # (D, 2)
    distances = np.linalg.norm(points - _agent_xz(scene), axis=1)
    i = int(np.argmin(distances))
    return float(distances[i]), bearing(scene, points[i])


def goal_egocentric(scene: Any) -> tuple[float, float]:
    """``(forward, left)`` metres of the goal in the agent's frame."""
    return egocentric(scene, np.array([scene.goal.pos[0], scene.goal.pos[2]]))
