"""How much of a scene's floor an agent has seen.

The floor of the maze's rooms is sampled on a grid (``spacing`` metres). A floor
point counts as *seen* once it has been inside the camera's horizontal field of
view, within ``max_dist`` metres, with no wall between it and the camera (a 2D
line-of-sight test against the scene's wall segments; objects do not occlude).
Coverage is the fraction of floor points seen. It uses privileged scene state,
so it is a measurement, not something an agent may use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def floor_points(scene, spacing: float = 0.25) -> np.ndarray:
    """``(P, 2)`` grid points (x, z) on the floor of the maze's rooms."""
    points = []
    for room in scene.grid_rooms:
        xs = np.arange(room.min_x + spacing / 2, room.max_x, spacing)
        zs = np.arange(room.min_z + spacing / 2, room.max_z, spacing)
        gx, gz = np.meshgrid(xs, zs)
        points.append(np.stack([gx.ravel(), gz.ravel()], axis=1))
    return np.concatenate(points)


def _walls(scene) -> tuple[np.ndarray, np.ndarray]:
    segs = np.asarray(scene.wall_segs)  # (W, 2, 3): two endpoints (x, y, z)
    return segs[:, 0, [0, 2]], segs[:, 1, [0, 2]]  # (W, 2) each


def visible(scene, points: np.ndarray, pose: np.ndarray, max_dist: float = 8.0) -> np.ndarray:
    """``(P,)`` bools: which points the camera at ``pose`` (x, z, yaw, ...) sees."""
    x, z, yaw = float(pose[0]), float(pose[1]), float(pose[2])
    d = points - [x, z]  # (P, 2)
    dist = np.hypot(d[:, 0], d[:, 1])
    # MiniWorld's heading is (cos yaw, -sin yaw) in (x, z); the image is square, so hfov = fov_y.
    heading = np.array([math.cos(yaw), -math.sin(yaw)])
    cos_angle = (d @ heading) / np.maximum(dist, 1e-9)
    half_fov = math.radians(scene.agent.cam_fov_y) / 2
    candidate = (dist <= max_dist) & (cos_angle >= math.cos(half_fov))
    idx = np.flatnonzero(candidate)
    if idx.size == 0:
        return candidate
    a, b = _walls(scene)
    p, r = np.array([x, z]), d[idx]  # segment p -> p + r, for each candidate (C, 2)
    s = b - a  # (W, 2)
    denom = r[:, None, 0] * s[None, :, 1] - r[:, None, 1] * s[None, :, 0]  # (C, W)
    qp = a[None, :, :] - p  # (1, W, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (qp[..., 0] * s[None, :, 1] - qp[..., 1] * s[None, :, 0]) / denom  # along the sight line
        u = (qp[..., 0] * r[:, None, 1] - qp[..., 1] * r[:, None, 0]) / denom  # along the wall
    blocked = ((denom != 0) & (t > 1e-6) & (t < 1 - 1e-6) & (u >= 0) & (u <= 1)).any(axis=1)
    out = np.zeros(len(points), dtype=bool)
    out[idx[~blocked]] = True
    return out


def coverage(scene, poses: Iterable[np.ndarray], spacing: float = 0.25) -> float:
    """Fraction of the floor seen from any of ``poses``."""
    points = floor_points(scene, spacing)
    seen = np.zeros(len(points), dtype=bool)
    for pose in poses:
        seen |= visible(scene, points, pose)
    return float(seen.mean())
