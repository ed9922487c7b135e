"""Pictures of what the world model imagines: labelled panels, grids and videos."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


def side_by_side(true_view: np.ndarray, imagined: np.ndarray, top_map: np.ndarray, frames_seen: int) -> np.ndarray:
    """One frame: the true egocentric view, the imagined view for the same pose, and the map.

    All panels are scaled to the map's height so they line up.
    """
    size = top_map.shape[0]
    panels = [
        label(_resize(true_view, size), "true view"),
        label(_resize(imagined, size), f"imagined ({frames_seen} frames)"),
        label(top_map, "map"),
    ]
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


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
