"""Checkpoints that describe themselves, resume exactly, and load without running code.

A checkpoint is a ``torch.save`` of plain containers only: tensors, numbers,
strings, lists and dicts. It is loaded with ``torch.load(weights_only=True)``,
whose restricted unpickler refuses arbitrary objects, so a hostile file cannot
execute code. Layout (``FORMAT_VERSION`` 1)::

    {"format": "gqn-gym-checkpoint", "version": 1,
     "config": GQNConfig.to_dict(), "model": state_dict,
     "optimizer": optimizer state_dict or None, "step": int, "skipped_steps": int,
     "numpy_rng": bit-generator state (plain dict), "torch_rng": uint8 tensor,
     "extra": dict of plain values}

Writes are atomic: a temporary file in the same folder, flushed and fsynced, then
``os.replace``d over the target, so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from world_model.config import GQNConfig

FORMAT = "gqn-gym-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file is not a readable, compatible checkpoint."""


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plain containers) with the format header; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": FORMAT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are shared like other files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint without unpickling arbitrary objects.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: If it is corrupt, truncated, not a checkpoint, or holds
            anything but plain data.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or unsafe): {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gqn-gym checkpoint")
    if data.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('version')}, this code reads {FORMAT_VERSION}")
    for key in ("config", "model"):
        if key not in data:
            raise CheckpointError(f"{path} lacks the {key!r} entry")
    try:
        GQNConfig.from_dict(data["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} holds an invalid config: {err}") from None
    return data


def check_compatible(data: dict[str, Any], config: GQNConfig, path: str | os.PathLike[str] = "checkpoint") -> None:
    """Raise :class:`CheckpointError` if a checkpoint's architecture differs from ``config``'s."""
    saved = GQNConfig.from_dict(data["config"])
    arch = (
        "image_size viewpoint_dim representation r_channels tower_channels hidden_channels z_channels "
        "num_layers core_kernel_size share_core downsample"
    ).split()
    diff = {k: (getattr(saved, k), getattr(config, k)) for k in arch if getattr(saved, k) != getattr(config, k)}
    if diff:
        raise CheckpointError(f"{path} was saved with another architecture (saved, expected): {diff}")


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Any:
    """A :class:`world_model.GQN` in eval mode, from a checkpoint alone."""
    from world_model.model import GQN

    data = load_checkpoint(path, map_location=device)
    model = GQN(GQNConfig.from_dict(data["config"]))
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match its config: {err}") from None
    return model.to(device).eval()


def export_for_inference(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write a smaller checkpoint for acting and evaluation: weights, config, step and extra, no optimizer/RNG state.

    Such a file loads with :func:`load_model` (it cannot resume training exactly).
    """
    data = load_checkpoint(src)
    keep = {k: data[k] for k in ("config", "model", "step", "extra") if k in data}
    keep["exported_from_step"] = int(data.get("step", 0))
    return save_checkpoint(dst, keep)
