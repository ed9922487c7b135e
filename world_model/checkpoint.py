"""Checkpoints that describe themselves, resume exactly, and load without running code.

A checkpoint is a ``torch.save`` of plain containers only: tensors, numbers,
strings, lists and dicts. It is loaded with ``torch.load(weights_only=True)``,
whose restricted unpickler refuses arbitrary objects, so a hostile file cannot
execute code. The content (``FORMAT_VERSION`` 2)::

    {"format": "gqn-gym-checkpoint", "version": 2,
     "config": GQNConfig.to_dict() ({"model": {...}, "train": {...}}), "model": state_dict,
     "optimizer": optimizer state_dict or None, "step": int, "skipped_steps": int,
     "numpy_rng": bit-generator state (plain dict), "torch_rng": uint8 tensor,
     "torch_rng_device": "cpu" or "cuda" (absent: "cpu"), "extra": dict of plain values}

Only ``config`` and ``model`` are required. The file wraps that content with a
checksum: ``{"format", "version": 2, "crc32": int, "payload": uint8 tensor}``,
where ``payload`` is the ``torch.save`` bytes of the content and ``crc32`` their
zlib CRC-32, so a flipped bit anywhere in weights, optimizer state or step counts
is an error rather than a silently different model. (Version 1 files, the
content without the wrapper, are still read.) Configs saved before the split into
``model`` and ``train`` (one flat dict) are read through :func:`migrate_config`.

Writes are atomic: a temporary file in the same folder, flushed and fsynced,
then ``os.replace``d over the target, so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from world_model.atomic import atomic_path
from world_model.config import MODEL_FIELDS, TRAIN_FIELDS, GQNConfig, ModelConfig

FORMAT = "gqn-gym-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(ValueError):
    """A file is not a readable, compatible checkpoint."""


# The flat config's defaults when checkpoints were saved in that layout: a field missing from such a
# dict was added after the file was written and takes the value that reproduces the old behaviour.
_FLAT_DEFAULTS: dict[str, Any] = {
    "image_size": 32, "viewpoint_dim": 7, "representation": "patch", "r_channels": 64, "tower_channels": 64,
    "tower_layout": "compact", "hidden_channels": 64, "inference_channels": 0, "view_channels": 0,
    "z_channels": 8, "num_layers": 6, "core_kernel_size": 3, "share_core": True, "downsample": 4,
}  # fmt: skip


#: Training fields added after checkpoints were written: a config without one takes this value.
LATER_TRAIN_DEFAULTS: dict[str, Any] = {
    "top_down_fraction": 0.0,
    "freeze_representation": False,
    "context_sampling": "uniform",
    "context_selection": "random",
    "context_draw_max": 0,
    "view_dropout": 0.0,
}
#: Architecture fields added since the current layout: a config without one takes this value.
LATER_MODEL_DEFAULTS: dict[str, Any] = {"map_channels": 0, "map_layout": "vector", "count_input": False}


def migrate_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's config in the current layout, ``{"model": {...}, "train": {...}}``.

    A dict already in that layout is returned as it is, but for fields added since
    (:data:`LATER_MODEL_DEFAULTS`, :data:`LATER_TRAIN_DEFAULTS`), which take their
    defaults. An older one, one flat dict of every field (``GQNConfig`` before the split
    into architecture and training), is mapped field by field: the training fields go
    to ``train``, and of the architecture

    * ``inference_channels`` 0 (or absent) meant "as wide as ``hidden_channels``";
    * ``view_channels`` absent meant 0, no nearest-view input;
    * ``tower_channels`` was also the ``patch`` network's width: for a ``patch`` model it
      becomes ``patch_channels`` (the tower width then takes the current default, unused);
    * ``tower_layout`` is gone with its ``compact`` variant: a ``tower`` or ``pool`` model
      needs ``paper``, a ``patch`` model ignores it.

    Raises:
        ValueError: If the dict is neither layout, or holds a variant that no longer exists.
    """
    if set(data) <= {"model", "train"}:
        model = {**LATER_MODEL_DEFAULTS, **data.get("model", {})}
        return {"model": model, "train": {**LATER_TRAIN_DEFAULTS, **data.get("train", {})}}
    unknown = sorted(set(data) - set(_FLAT_DEFAULTS) - set(TRAIN_FIELDS))
    if unknown:
        raise ValueError(f"Unknown config keys {unknown}")
    old = {**_FLAT_DEFAULTS, **{k: v for k, v in data.items() if k in _FLAT_DEFAULTS}}
    model = {k: old[k] for k in MODEL_FIELDS if k in old}
    model["inference_channels"] = old["inference_channels"] or old["hidden_channels"]
    if old["representation"] == "patch":
        model["patch_channels"] = old["tower_channels"]
        model["tower_channels"] = ModelConfig.tower_channels
    elif old["tower_layout"] != "paper":
        raise ValueError(
            f"a {old['representation']!r} model with the {old['tower_layout']!r} tower layout, which was removed "
            "(only the paper's tower remains)"
        )
    model = {**LATER_MODEL_DEFAULTS, **model}
    model = {k: model[k] for k in MODEL_FIELDS if k in model}  # in field order
    return {"model": model, "train": {**LATER_TRAIN_DEFAULTS, **{k: data[k] for k in TRAIN_FIELDS if k in data}}}


def save_checkpoint(
    path: str | os.PathLike[str],
    payload: Mapping[str, Any] | None = None,
    *,
    model: nn.Module | None = None,
    config: GQNConfig | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    step: int | None = None,
    extra: Mapping[str, Any] | None = None,
    **entries: Any,
) -> Path:
    """Atomically write a checkpoint; return its path.

    Either pass a ready ``payload`` dict of plain containers (the layout in the
    module docstring), or the parts as keywords, e.g.
    ``save_checkpoint(path, model=model, optimizer=opt, step=10, extra={...})``;
    keywords are merged over ``payload``. ``config`` defaults to ``model.config``.
    Further keyword ``entries`` (``skipped_steps``, ``numpy_rng``, ``torch_rng``, ...)
    are stored as given.

    Raises:
        ValueError: If no config or no model weights are given.
    """
    data: dict[str, Any] = dict(payload or {})
    if model is not None:
        data["model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if config is None and isinstance(getattr(model, "config", None), GQNConfig):
            config = model.config
    if config is not None:
        data["config"] = config.to_dict()
    if optimizer is not None:
        data["optimizer"] = optimizer.state_dict()
    if step is not None:
        data["step"] = int(step)
    if extra is not None:
        data["extra"] = dict(extra)
    data.update(entries)
    for key in ("config", "model"):
        if key not in data:
            raise ValueError(f"A checkpoint needs {key!r}; got entries {sorted(data)}")
    path = Path(path)
    data = {"format": FORMAT, "version": FORMAT_VERSION, **data}
    content = io.BytesIO()
    torch.save(data, content)
    blob = content.getvalue()
    wrapper = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "crc32": zlib.crc32(blob),
        "payload": torch.frombuffer(bytearray(blob), dtype=torch.uint8),
    }
    with atomic_path(path) as tmp:
        torch.save(wrapper, tmp)
    return path


def _describe_unreadable(path: Path) -> str:
    """Why the file at ``path`` cannot be a checkpoint, in plain words, when that shows without reading it."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        return f"is not a checkpoint: torch.save writes a zip archive, this file ({size} bytes) is not one"
    return ""


def _torch_load(source: Any, path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a :class:`CheckpointError`."""
    if isinstance(source, Path):
        problem = _describe_unreadable(source)
        if problem:
            raise CheckpointError(f"{path} {problem}")
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        OSError,
        IndexError,
        TypeError,
        AttributeError,
        UnicodeDecodeError,
        struct.error,
    ) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt or holding code): {type(err).__name__}: {reason}"
        ) from None


def check_device(device: str | torch.device) -> torch.device:
    """The torch device named by ``device``, or a ValueError saying why it cannot be used here."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda:0', got {device!r} ({err})") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available: this machine has no CUDA device")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: this machine has {torch.cuda.device_count()} GPU(s)")
    elif parsed.type not in ("cpu", "meta"):
        backend = getattr(torch, parsed.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise ValueError(f"device {device!r} is not available on this machine")
    return parsed


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint without unpickling arbitrary objects.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If ``map_location`` is not a device this machine has.
        CheckpointError: If it is corrupt, truncated, not a checkpoint, or holds
            anything but plain data.
    """
    map_location = check_device(map_location)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}")
    data = _torch_load(path, path, map_location)
    if isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") == FORMAT_VERSION:
        payload, crc = data.get("payload"), data.get("crc32")
        if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or not isinstance(crc, int):
            raise CheckpointError(f"{path} lacks its checksummed payload")
        blob = payload.cpu().numpy().tobytes()
        if zlib.crc32(blob) != crc:
            raise CheckpointError(f"{path} is corrupt: its content fails the CRC-32 check")
        data = _torch_load(io.BytesIO(blob), path, map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gqn-gym checkpoint")
    if data.get("version") == 1:
        warnings.warn(
            f"{path} is a version-1 checkpoint, which has no checksum: tampering or corruption would go unnoticed. "
            "Save it again (world_model.export_for_inference) to get the checked format.",
            stacklevel=2,
        )
    if data.get("version") not in READABLE_VERSIONS:
        version = data.get("version")
        raise CheckpointError(f"{path} has checkpoint version {version}, this code reads {READABLE_VERSIONS}")
    for key in ("config", "model"):
        if key not in data:
            raise CheckpointError(f"{path} lacks the {key!r} entry")
    try:
        data["config"] = migrate_config(data["config"])
        GQNConfig.from_dict(data["config"])
    except (TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path} holds an invalid config: {err}") from None
    return data


def check_compatible(data: Mapping[str, Any], config: GQNConfig, path: str | os.PathLike[str] = "checkpoint") -> None:
    """Raise :class:`CheckpointError` if a checkpoint's architecture differs from ``config``'s.

    The error names every differing field as ``field: (saved, expected)``.
    """
    saved = GQNConfig.from_dict(migrate_config(data["config"])).architecture()
    wanted = config.architecture()
    diff = {k: (saved[k], wanted[k]) for k in wanted if saved[k] != wanted[k]}
    if diff:
        raise CheckpointError(f"{path} was saved with another architecture (saved, expected): {diff}")


def load_weights(
    model: nn.Module, source: str | os.PathLike[str] | Mapping[str, Any], strict_config: bool = True
) -> dict[str, Any]:
    """Load a checkpoint's weights into an existing :class:`world_model.GQN`, all or nothing.

    Args:
        model: The model (its ``config`` is checked against the checkpoint's).
        source: A checkpoint path or the dict :func:`load_checkpoint` returned.
        strict_config: Check the architecture fields of the two configs first.

    Returns:
        The checkpoint data.

    Raises:
        CheckpointError: If the checkpoint is unreadable or from another
            architecture; the model's weights are then unchanged.
    """
    name = str(source) if isinstance(source, str | os.PathLike) else "checkpoint"
    data = load_checkpoint(source) if isinstance(source, str | os.PathLike) else dict(source)
    if "model" not in data or "config" not in data:
        raise CheckpointError(f"{name} lacks the 'config' or 'model' entry")
    if strict_config:
        check_compatible(data, model.config, name)
    current = model.state_dict()
    weights = data["model"]
    missing, unexpected = sorted(set(current) - set(weights)), sorted(set(weights) - set(current))
    wrong = [k for k in current if k in weights and tuple(weights[k].shape) != tuple(current[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{name}: weights do not fit the model (missing {missing}, unexpected {unexpected}, wrong shape {wrong})"
        )
    model.load_state_dict(weights)
    return data


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Any:
    """A :class:`world_model.GQN` in eval mode, from a checkpoint alone."""
    from world_model.model import GQN

    data = load_checkpoint(path, map_location=device)
    model = GQN(GQNConfig.from_dict(data["config"]))  # load_checkpoint migrated it
    load_weights(model, data, strict_config=False)
    return model.to(device).eval()


def export_for_inference(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write a smaller checkpoint for acting and evaluation: weights, config, step and extra, no optimizer/RNG state.

    Such a file loads with :func:`load_model` (it cannot resume training exactly).
    """
    data = load_checkpoint(src)
    keep = {k: data[k] for k in ("config", "model", "step", "extra") if k in data}
    keep["exported_from_step"] = int(data.get("step", 0))
    return save_checkpoint(dst, keep)


def _widen_inputs(
    data: dict,
    old_config: GQNConfig,
    changes: dict[str, Any],
    seed: int,
    dst: str | os.PathLike[str],
    fresh_map: bool = False,
) -> Path:
    """Write to ``dst`` the model of checkpoint ``data`` (``old_config``) rebuilt with ``changes`` adding core inputs.

    The new model's new parameters are initialised from ``seed``; every core's
    convolution is widened by name (:class:`world_model.generator.ChannelLayout`), the old
    inputs' weights copied into their places and the new inputs' weights set to zero, so
    that it renders exactly as the old model until trained. With ``fresh_map`` the old
    map head is dropped: the new one starts from ``seed`` and the cores' ``map`` input
    weights at zero, so the new model renders as the old one would without its map. The
    optimizer and RNG state are not kept: training restarts Adam from these weights.
    """
    from world_model.model import GQN

    old = GQN(old_config)
    load_weights(old, data, strict_config=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = GQN(old_config.replace(**changes))  # validates the changes
    weights = new.state_dict()
    old_weights = old.state_dict()
    for gen in ("generator", "inference"):
        old_layout = getattr(old.generator, f"{gen}_inputs")
        new_layout = getattr(new.generator, f"{gen}_inputs")
        for i, core in enumerate(getattr(new.generator, f"{gen}_cores")):
            name = f"generator.{gen}_cores.{i}.conv.weight"
            before = old_weights[name]  # (4H, in + H, k, k)
            after = torch.zeros_like(weights[name])
            for group, where in old_layout.slices.items():
                width = where.stop - where.start
                if fresh_map and group == "map":
                    continue  # a grid head's own input
                if fresh_map and group == "r":
                    width = old_config.r_channels  # a vector head's channels follow r's in this input
                target = new_layout.slices[group]
                if width > target.stop - target.start:
                    raise CheckpointError(f"cannot fit the old {group!r} input ({width} channels) into {target}")
                after[:, target.start : target.start + width] = before[:, where.start : where.start + width]
            after[:, core.in_channels :] = before[:, old_layout.channels :]  # the core's own hidden state
            weights[name] = after
    for name, tensor in old_weights.items():  # every other tensor keeps its shape and values
        if fresh_map and name.startswith("representation.map_head."):
            continue
        if tuple(weights[name].shape) == tuple(tensor.shape):
            weights[name] = tensor.clone()
    keep = {k: data[k] for k in ("step", "extra") if k in data}
    return save_checkpoint(dst, {**keep, "config": new.config.to_dict(), "model": weights})


def add_map_head(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    channels: int,
    seed: int = 0,
    layout: str = "vector",
    replace: bool = False,
) -> Path:
    """Give a trained ``patch`` model a map head of ``channels`` (``ModelConfig.map_channels``); write it to ``dst``.

    ``layout`` is ``ModelConfig.map_layout``: ``vector``, ``grid`` or ``coverage``.

    The new model is the old one plus the map head (initialised from ``seed``) and
    its ``channels`` new inputs to the generator's and the inference network's cores,
    whose weights start at zero: it renders exactly as the old model until trained
    (``freeze_representation=true`` then trains the map head and the generator, and
    leaves what agents observe as it was). Like :func:`export_for_inference`, the
    optimizer and RNG state are not kept: training restarts Adam from these weights.

    With ``replace`` a model that has a map head gets a new one in its place: the old
    head and its inputs' weights are dropped, everything else is kept (a generator
    already trained on top-down queries, say, given another layout of map).

    Raises:
        CheckpointError: If the checkpoint is unreadable, or its model already has a map
            head and ``replace`` is false.
        ValueError: If ``channels`` < 1 or the model's representation network is not ``patch``.
    """
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    data = load_checkpoint(src)
    config = GQNConfig.from_dict(data["config"])
    if config.map_channels and not replace:
        raise CheckpointError(
            f"{src} already has a map head ({config.map_channels} channels); "
            "replace=True (gqn-gym add-map --replace) puts a new one in its place"
        )
    changes = {"map_channels": channels, "map_layout": layout}
    return _widen_inputs(data, config, changes, seed, dst, fresh_map=bool(config.map_channels))


def add_coverage(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Turn a trained model's ``grid`` map head into a ``coverage`` one; write it to ``dst``.

    The map head's weights are kept; the generator's and inference network's cores get
    the new ``coverage`` input with weights at zero, and read the map as each cell's mean
    over the views that looked at it instead of the sum (``ModelConfig.map_layout``), so
    the new model does not render as the old one until trained. The optimizer and RNG
    state are not kept.

    Raises:
        CheckpointError: If the checkpoint is unreadable or its model has no ``grid`` map head.
    """
    data = load_checkpoint(src)
    config = GQNConfig.from_dict(data["config"])
    if not (config.map_channels and config.map_layout == "grid"):
        raise CheckpointError(f"{src} has no grid map head (map_layout {config.map_layout!r})")
    return _widen_inputs(data, config, {"map_layout": "coverage"}, 0, dst)


def add_count_input(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Give a trained model the generator's count input (``ModelConfig.count_input``); write it to ``dst``.

    The new input's weights start at zero, so the new model renders exactly as the old
    one; trained with ``context_draw_max`` above ``context_max``, it can learn to read
    how many views a scaled-down r stands for. Nothing agents observe changes. The
    optimizer and RNG state are not kept.

    Raises:
        CheckpointError: If the checkpoint is unreadable or its model already has the input.
    """
    data = load_checkpoint(src)
    config = GQNConfig.from_dict(data["config"])
    if config.count_input:
        raise CheckpointError(f"{src} already has a count input")
    return _widen_inputs(data, config, {"count_input": True}, 0, dst)
