"""Pictures of scenes and of what the world model imagines: labelled panels, grids, videos.

:func:`rollout_imagination` is what ``gqn-gym imagine`` and ``gqn-gym demo`` run (and
``examples/imagine.py`` shows); :func:`scene_tour` is ``gqn-gym tour``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 14


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize to ``size`` x ``size`` (keeps pixels crisp)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.NEAREST))


def label(image: np.ndarray, text: str) -> np.ndarray:
    """Put ``text`` in a black band above ``image`` (uint8 HWC)."""
    band = Image.new("RGB", (image.shape[1], LABEL_HEIGHT), (0, 0, 0))
    ImageDraw.Draw(band).text((3, 1), text, fill=(255, 255, 255), font=ImageFont.load_default())
    return np.concatenate([np.asarray(band), image], axis=0)


def heat(values: np.ndarray, top: float) -> np.ndarray:
    """A ``(H, W)`` array in [0, ``top``] as a black-red-yellow-white picture, ``(H, W, 3)`` uint8."""
    t = np.clip(np.asarray(values, dtype=np.float32) / max(top, 1e-9), 0, 1)[..., None]  # (H, W, 1)
    ramp = np.clip(np.concatenate([3 * t, 3 * t - 1, 3 * t - 2], axis=-1), 0, 1)  # R, then G, then B rise
    return (ramp * 255).round().astype(np.uint8)


#: Spread (pixel std in [0, 1] units) shown at full brightness in the uncertainty panel.
SPREAD_SCALE = 0.25


def side_by_side(
    true_view: np.ndarray,
    imagined: np.ndarray,
    top_map: np.ndarray,
    frames_seen: int,
    imagined_map: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """One frame: the true egocentric view, the imagined view for the same pose, and the map.

    With ``imagined_map`` = ``(map, spread)`` (:meth:`GQNRepresentation.imagine_top_down`),
    two more panels: the maze from above as the model imagines it, and its uncertainty
    (per-pixel spread of prior samples; white is :data:`SPREAD_SCALE` or more). All
    panels are scaled to the map's height so they line up.
    """
    size = top_map.shape[0]
    panels = [
        label(_resize(true_view, size), "true view"),
        label(_resize(imagined, size), f"imagined ({frames_seen} frames)"),
        label(top_map, "map"),
    ]
    if imagined_map is not None:
        mean, spread = imagined_map
        panels.append(label(_resize(mean, size), "imagined map"))
        panels.append(label(_resize(heat(spread, SPREAD_SCALE), size), "its uncertainty"))
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    out = [panels[0]]
    for panel in panels[1:]:
        out += [gap, panel]
    return np.concatenate(out, axis=1)


def grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], size: int = 96) -> np.ndarray:
    """A labelled grid: each row a list of images (resized to ``size``)."""
    out = []
    for images, text in zip(rows, row_labels, strict=True):
        row = np.concatenate([_resize(img, size) for img in images], axis=1)
        out.append(label(row, text))
    width = max(r.shape[1] for r in out)
    out = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in out]
    return np.concatenate(out, axis=0)


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """Write frames as MP4 (imageio-ffmpeg) or GIF, by the file's suffix; return the path.

    The file is written under a temporary name and renamed, so a crash never
    leaves a half-written video at ``path``.
    """
    import imageio.v2 as imageio

    from world_model.atomic import atomic_path

    path = Path(path)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"fps must be a number > 0, got {fps!r}")
    if path.suffix not in (".gif", ".mp4"):
        raise ValueError(f"Video path must end in .mp4 or .gif, got {path}")
    with atomic_path(path) as tmp:
        if path.suffix == ".gif":
            imageio.mimsave(tmp, list(frames), duration=1000 / fps, loop=0)
        else:
            # macro_block_size=1: do not resize frames to multiples of 16.
            with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, quality=8) as writer:
                for frame in frames:
                    writer.append_data(frame)
    return path


@dataclass
class ImaginationFiles:
    """What :func:`rollout_imagination` wrote."""

    video: Path
    """MP4: the true view, the imagined view for the same pose and the map, one frame per step."""
    gif: Path
    """The same at every other frame, as a GIF."""
    panel: Path | None
    """PNG of true and imagined views from unvisited poses (``None`` if none was asked for or found)."""
    frames: int
    """Frames in the video (steps taken + 1)."""
    unvisited: int
    """Unvisited poses in the panel."""


def rollout_imagination(
    env: Any,
    policy: Any,
    steps: int,
    seed: int = 0,
    out: str | Path = "outputs/imagine",
    fps: int = 10,
    unvisited: int = 6,
) -> ImaginationFiles:
    """Roll out ``policy`` in a GQNMaze ``env`` and write what its world model imagines.

    Writes ``imagination.mp4`` and ``imagination.gif`` (each frame: the true view,
    the view the model imagines for the same pose from the frames seen so far, and
    the map) and ``unvisited.png`` (true and imagined views from poses at least 2 m
    from every pose the agent stood at) into ``out``.

    Args:
        env: A GQNMaze env made with ``render_mode="rgb_array"`` (its render is the three-panel frame).
        policy: Anything with ``reset()`` and ``act(info) -> action``, e.g. ``agents.collectors.make_policy``'s.
        steps: Agent steps (>= 1); the episode may end sooner.
        seed: Seed of the scene and of the unvisited poses.
        out: Output folder (created).
        fps: Frames per second of the MP4 (the GIF has half).
        unvisited: Unvisited poses in the panel (>= 0).

    Raises:
        ValueError: If ``steps`` < 1 or ``unvisited`` < 0.
    """
    import imageio.v3 as iio

    from world_model.atomic import atomic_path

    if steps < 1 or unvisited < 0:
        raise ValueError(f"steps must be >= 1 and unvisited >= 0, got {steps} and {unvisited}")
    scene = env.unwrapped
    _, info = env.reset(seed=seed)
    policy.reset()
    frames = [env.render()]
    visited = [info["pose"][:2]]
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(policy.act(info))
        frames.append(env.render())
        visited.append(info["pose"][:2])
        if terminated or truncated:
            break
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    video = write_video(frames, out / "imagination.mp4", fps=fps)
    gif = write_video(frames[::2], out / "imagination.gif", fps=max(fps // 2, 1))

    rng = np.random.default_rng(seed + 1)
    visited_xy = np.stack(visited)  # (T, 2)
    imagine = env.get_wrapper_attr("imagine")
    truths, dreams = [], []
    for _ in range(5000):
        if len(truths) == unvisited:
            break
        pose = scene.sample_free_pose(rng)
        if np.min(np.linalg.norm(visited_xy - [pose.x, pose.z], axis=1)) >= 2.0:
            truths.append(scene.render_view(pose))
            dreams.append(imagine(pose))
    panel = None
    if truths:
        panel = out / "unvisited.png"
        with atomic_path(panel) as tmp:
            iio.imwrite(tmp, grid([truths, dreams], ["true views from unvisited poses", "imagined"]))
    return ImaginationFiles(video, gif, panel, len(frames), len(truths))


def scene_tour(env: Any, seed: int = 0, frames: int = 8, out: str | Path = "outputs/scene_tour") -> dict[str, Any]:
    """Write ``views.png`` (the first view after ``reset(seed)``, then views from random free poses) and ``map.png``.

    Args:
        env: A GQNMazeScene env.
        seed: Scene seed (and of the poses).
        frames: Egocentric views in the strip (>= 1).
        out: Output folder (created).

    Returns:
        ``views`` and ``map`` (paths), ``pose`` (the start pose ``[x, z, yaw, pitch]``).
    """
    import imageio.v3 as iio

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene = env.unwrapped
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    views = [obs["image"]]
    for _ in range(frames - 1):
        views.append(scene.render_view(scene.sample_free_pose(rng)))
    iio.imwrite(out / "views.png", np.concatenate(views, axis=1))  # (H, frames * W, 3)
    iio.imwrite(out / "map.png", scene.render_map())
    return {"views": out / "views.png", "map": out / "map.png", "pose": info["pose"]}
