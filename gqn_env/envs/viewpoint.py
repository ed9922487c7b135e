"""Poses and the GQN viewpoint vector.

Conventions (stated once, used everywhere):

* A **pose** is where the agent stands and looks: ``x`` and ``z`` in metres on
  the floor plane (MiniWorld's y axis points up), ``yaw`` in radians with 0
  looking along +X and positive turning left (MiniWorld's ``agent.dir``), and
  ``pitch`` in radians, positive looking up (0 unless domain randomisation or a
  caller sets it). The camera sits ``cam_height`` metres above the floor.
* The **viewpoint** fed to the GQN is a float32 vector of length 7::

      [x_n, y_n, z_n, cos(yaw), sin(yaw), cos(pitch), sin(pitch)]

  ``x_n`` and ``z_n`` are the position scaled to [-1, 1] by the scene's floor
  bounds, ``y_n`` the camera height scaled to [-1, 1] by the wall height. This
  is the 7-d viewpoint of Eslami et al. (2018): position, then the cosine and
  sine of yaw and of pitch.
* The **top-down view** (:meth:`GQNMazeScene.render_top_down`, the whole maze from
  directly above, no agent) has the viewpoint :data:`TOP_DOWN_VIEWPOINT`:
  ``[0, 1, 0, 1, 0, 0, -1]``, the centre of the floor at the top of the walls,
  looking straight down (pitch -90 degrees). First-person poses never look straight
  down, so no first-person viewpoint equals it.

This module imports numpy only, so it is safe to use without OpenGL (or torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VIEWPOINT_DIM = 7

#: The top-down view's viewpoint (module docstring). ``world_model.frames`` holds the same
#: vector for the trainer, which cannot import the envs; a test keeps the two equal.
TOP_DOWN_VIEWPOINT = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, -1.0], dtype=np.float32)


@dataclass(frozen=True)
class Pose:
    """An agent pose on the floor plane.

    Attributes:
        x: Position along X in metres.
        z: Position along Z in metres.
        yaw: Heading in radians; 0 looks along +X, positive turns left.
        pitch: Camera pitch in radians; positive looks up.
    """

    x: float
    z: float
    yaw: float
    pitch: float = 0.0

    def __post_init__(self) -> None:
        """Reject non-finite components."""
        values = (self.x, self.z, self.yaw, self.pitch)
        if not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f"Pose components must be finite, got {values}")

    def as_array(self) -> np.ndarray:
        """Return ``[x, z, yaw, pitch]`` as float64 (the ``info["pose"]`` layout)."""
        return np.array([self.x, self.z, self.yaw, self.pitch], dtype=np.float64)

    @classmethod
    def from_array(cls, values: np.ndarray | list[float] | tuple[float, ...]) -> Pose:
        """Build a pose from ``[x, z, yaw]`` or ``[x, z, yaw, pitch]``."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape[0] not in (3, 4):
            raise ValueError(f"A pose array needs 3 or 4 values (x, z, yaw[, pitch]), got {arr.shape[0]}")
        return cls(*(float(v) for v in arr))


def wrap_angle(angle: float) -> float:
    """Wrap an angle in radians to [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


@dataclass(frozen=True)
class SceneBounds:
    """Extent of a scene, used to scale positions to [-1, 1].

    Attributes:
        min_x: Smallest floor X in metres.
        max_x: Largest floor X in metres.
        min_z: Smallest floor Z in metres.
        max_z: Largest floor Z in metres.
        wall_height: Wall height in metres (scales the camera height).
    """

    min_x: float
    max_x: float
    min_z: float
    max_z: float
    wall_height: float

    def __post_init__(self) -> None:
        """Reject empty extents."""
        if not (self.max_x > self.min_x and self.max_z > self.min_z and self.wall_height > 0):
            raise ValueError(f"Degenerate scene bounds: {self}")


def _scale(value: float, low: float, high: float) -> float:
    return 2.0 * (value - low) / (high - low) - 1.0


def _unscale(value: float, low: float, high: float) -> float:
    return low + (value + 1.0) * 0.5 * (high - low)


def pose_to_viewpoint(pose: Pose, bounds: SceneBounds, cam_height: float) -> np.ndarray:
    """Turn a pose into the 7-d GQN viewpoint vector (float32, in [-1, 1]).

    Args:
        pose: The agent pose.
        bounds: The scene's extent.
        cam_height: Camera height above the floor in metres.

    Returns:
        ``[x_n, y_n, z_n, cos(yaw), sin(yaw), cos(pitch), sin(pitch)]``.
    """
    vp = np.array(
        [
            _scale(pose.x, bounds.min_x, bounds.max_x),
            _scale(cam_height, 0.0, bounds.wall_height),
            _scale(pose.z, bounds.min_z, bounds.max_z),
            math.cos(pose.yaw),
            math.sin(pose.yaw),
            math.cos(pose.pitch),
            math.sin(pose.pitch),
        ],
        dtype=np.float32,
    )
    return np.clip(vp, -1.0, 1.0)


def viewpoint_to_pose(viewpoint: np.ndarray, bounds: SceneBounds) -> Pose:
    """Invert :func:`pose_to_viewpoint` (the camera height is not part of a pose).

    Args:
        viewpoint: A 7-d viewpoint vector.
        bounds: The scene's extent.

    Returns:
        The pose the viewpoint describes.
    """
    vp = np.asarray(viewpoint, dtype=np.float64).reshape(-1)
    if vp.shape[0] != VIEWPOINT_DIM:
        raise ValueError(f"A viewpoint has {VIEWPOINT_DIM} values, got shape {np.shape(viewpoint)}")
    if not np.all(np.isfinite(vp)):
        raise ValueError(f"Viewpoint must be finite, got {vp.tolist()}")
    return Pose(
        x=_unscale(vp[0], bounds.min_x, bounds.max_x),
        z=_unscale(vp[2], bounds.min_z, bounds.max_z),
        yaw=math.atan2(vp[4], vp[3]),
        pitch=math.atan2(vp[6], vp[5]),
    )
