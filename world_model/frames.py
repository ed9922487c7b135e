"""Frames, the unit of the scene stream, and their validation.

A *frame* is ``(scene_id, image, viewpoint)``: ``scene_id`` an int, ``image`` a
``uint8`` array ``(H, W, 3)`` with ``H == W == image_size`` and ``viewpoint`` a
``float32`` array ``(D,)`` (``D == viewpoint_dim``, 7 by default). A scene is one
episode of one env: its frames show the same 3D maze from different poses. A scene
may also hold a *top-down* frame, the whole maze seen from above, marked by its
viewpoint (:data:`TOP_DOWN_VIEWPOINT`): it is a query target, never context.

:func:`check_frames` validates frames for both the in-memory buffer
(:mod:`world_model.data`) and the on-disk store (:mod:`world_model.store`); the
store loads into anything shaped like :class:`FrameSink`. This module imports
neither, so the import graph is one-way: ``frames <- store <- data``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["TOP_DOWN_VIEWPOINT", "FrameSink", "Frames", "check_frame", "check_frames", "is_top_down"]

#: The viewpoint of a *top-down* frame: the whole scene seen from directly above
#: (``[x, y, z, cos yaw, sin yaw, cos pitch, sin pitch]`` = centre of the floor, top of
#: the walls, yaw 0, pitch -90 degrees). No first-person frame looks straight down,
#: so no first-person viewpoint equals it (:func:`is_top_down`). The layout is the
#: scene env's (gqn_env/envs/viewpoint.py).
TOP_DOWN_VIEWPOINT = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, -1.0], dtype=np.float32)


def is_top_down(viewpoints: np.ndarray) -> np.ndarray:
    """Whether each ``(..., 7)`` viewpoint is :data:`TOP_DOWN_VIEWPOINT` (to 1e-4): a top-down frame."""
    return (np.abs(np.asarray(viewpoints) - TOP_DOWN_VIEWPOINT) < 1e-4).all(axis=-1)


_INT64_MAX = np.iinfo(np.int64).max

Frames = tuple[np.ndarray, np.ndarray, np.ndarray]


def check_frames(scene_ids: object, images: object, viewpoints: object, image_size: int, viewpoint_dim: int) -> Frames:
    """Validate a batch of frames and return ``(int64 ids, uint8 images, float32 viewpoints)``.

    Raises:
        ValueError: naming the value received, if anything is malformed.
    """
    images = np.asarray(images)
    s = image_size
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (s, s, 3):
        raise ValueError(f"images must have shape (N, {s}, {s}, 3), got {images.shape}")
    n = images.shape[0]
    ids = np.asarray(scene_ids)
    if ids.dtype.kind not in "iu" or ids.shape != (n,):
        raise ValueError(f"scene_ids must be {n} integers, got {ids.dtype} array of shape {ids.shape}")
    if ids.dtype.kind == "u" and n and int(ids.max()) > _INT64_MAX:
        raise ValueError(f"scene_ids must fit in int64, got {int(ids.max())}")
    vps = np.asarray(viewpoints)
    if vps.dtype.kind not in "fiu":
        raise ValueError(f"viewpoints must be real numbers, got dtype {vps.dtype}")
    if vps.shape != (n, viewpoint_dim):
        raise ValueError(f"viewpoints must have shape ({n}, {viewpoint_dim}), got {vps.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        vps32 = vps.astype(np.float32)  # values beyond float32 become inf and are rejected below
    finite = np.isfinite(vps32).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ValueError(f"viewpoints must be finite in float32, got {vps[bad].tolist()} at index {bad}")
    return ids.astype(np.int64), images, vps32


def check_frame(scene_id: object, image: object, viewpoint: object, image_size: int, viewpoint_dim: int) -> Frames:
    """Validate one frame; return it as a batch of one (see :func:`check_frames`)."""
    if isinstance(scene_id, bool) or not isinstance(scene_id, int | np.integer):
        raise ValueError(f"scene_id must be an int, got {scene_id!r} of type {type(scene_id).__name__}")
    if not -_INT64_MAX - 1 <= int(scene_id) <= _INT64_MAX:
        raise ValueError(f"scene_id must fit in int64, got {scene_id}")
    image, viewpoint = np.asarray(image), np.asarray(viewpoint)
    if image.shape != (image_size, image_size, 3):
        raise ValueError(f"image must have shape ({image_size}, {image_size}, 3), got {image.shape}")
    if viewpoint.shape != (viewpoint_dim,):
        raise ValueError(f"viewpoint must have shape ({viewpoint_dim},), got {viewpoint.shape}")
    return check_frames(np.array([scene_id], dtype=np.int64), image[None], viewpoint[None], image_size, viewpoint_dim)


class FrameSink(Protocol):
    """What :meth:`world_model.store.SceneStore.load_into` fills (e.g. a :class:`~world_model.data.SceneBuffer`)."""

    image_size: int
    viewpoint_dim: int

    def add_batch(self, scene_ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        """Add N frames: ``(N,)`` ids, ``(N, H, W, 3)`` uint8 images, ``(N, D)`` viewpoints."""
