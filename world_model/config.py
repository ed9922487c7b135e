"""Typed GQN configuration: the architecture, the training recipe, and presets as overlays.

* :class:`ModelConfig`: the architecture only (what fixes the parameters' shapes).
* :class:`TrainConfig`: optimiser, schedules, batches and the seed.
* :class:`GQNConfig`: the two together, what a checkpoint and a run save.

The dataclass defaults are the recommended recipe, the ``cpu`` preset: useful
quality in about an hour on 2 CPU cores (docs/world_model.md; the measurements
behind it are in docs/history.md). The other presets are overlays of a few
fields (:data:`PRESETS`): ``tiny`` for tests (a training step takes
milliseconds) and ``paper``, the sizes of Eslami et al. (2018), for GPUs.

The paper's annealing schedules assume ~2M steps. A CPU run does a few thousand,
so the ``cpu`` recipe anneals sigma and the learning rate over its own expected
length; :meth:`GQNConfig.with_anneal_steps` rescales both for a given run length.

Checkpoints saved before this layout (one flat dict) are read through
:func:`world_model.checkpoint.migrate_config`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REPRESENTATIONS = ("pool", "tower", "patch")
MAP_LAYOUTS = ("vector", "grid", "coverage")


def _check_ints(owner: Any, names: Sequence[str], least: int = 1) -> None:
    """Raise ``ValueError`` unless every named field of ``owner`` is an int of at least ``least`` (1 or 0)."""
    what = "a positive integer" if least == 1 else f"an integer >= {least}"
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{type(owner).__name__}.{name} must be {what}, got {value!r}")


def _check_flags(owner: Any, names: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every named field of ``owner`` is a bool."""
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, bool):
            raise ValueError(f"{type(owner).__name__}.{name} must be true or false, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (``name`` says what it is)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a GQN; two models with equal ones share checkpoints."""

    image_size: int = 32
    """Side of the square RGB images the model takes and renders."""
    viewpoint_dim: int = 7
    """Length of the viewpoint vector (position 3, cos/sin yaw, cos/sin pitch)."""
    representation: str = "patch"
    """``pool``: one r_channels vector per scene from the paper's tower; ``tower``: the tower's
    r_channels map at hidden resolution; ``patch``: a vector from linear layers over image patches
    (cheap per frame, see representation.py)."""
    r_channels: int = 64
    """Channels of the scene representation r that agents observe (also the tower's wide layers)."""
    map_channels: int = 0
    """Channels added to r by a second head of the ``patch`` network, the map head, read by the
    generator only: r is ``r_channels + map_channels`` wide, and agents observe its first
    ``r_channels``. With ``freeze_representation`` the map head still trains, so a trained model
    can learn a map (top-down queries) while what agents observe stays as it was
    (:func:`world_model.checkpoint.add_map_head`). 0: no map head."""
    map_layout: str = "vector"
    """What the map head draws: ``vector``, ``map_channels`` floats per view; ``grid``, a
    floor-aligned ``(map_channels, s, s)`` grid per view (s the hidden side), the view's
    features placed where on the floor the camera looked (representation.py), so that
    their sum over views is a map the generator reads like an image; ``coverage``, a ``grid``
    that also keeps each view's footprint (one more channel, 1 where the camera looked), so
    that the generator reads each floor cell's mean over the views that looked at it and
    ``log(1 + how many did)``: a map whose values do not fade as more views are summed, and
    which says how much of each place was seen."""
    patch_channels: int = 64
    """Width of the ``patch`` representation network's linear layers."""
    tower_channels: int = 128
    """Width of the narrow convolutions of the paper's tower (``tower`` and ``pool``; 128 in the paper)."""
    hidden_channels: int = 96
    """ConvLSTM hidden channels of the generator."""
    inference_channels: int = 16
    """ConvLSTM hidden channels of the inference core. It only has to say what z should carry, a few
    nats at annealed sigma, so it can be narrower than the generator's (the paper: equal)."""
    view_channels: int = 48
    """Channels of the generator's second input, the context view nearest to the query embedded
    per ``downsample``-pixel patch (generator.py); 0: no such input, r and v only, as in the paper."""
    z_channels: int = 8
    """Channels of the latent z per generation step."""
    num_layers: int = 6
    """Number of ConvDRAW generation steps L."""
    core_kernel_size: int = 3
    """Kernel size of the ConvLSTM cores and of the prior/posterior heads."""
    share_core: bool = True
    """Share one ConvLSTM core across the L steps (the paper unshares them)."""
    downsample: int = 4
    """Image side / hidden side (4 in the paper: 64x64 -> 16x16); also the patch side."""
    count_input: bool = False
    """Give the generator's and inference network's cores one more input, how many times more
    views r was summed over than it is scaled to: ``log(K / context_max)`` for a context of K >
    ``context_max`` views, whose sum is rendered as ``context_max`` views' worth
    (:func:`world_model.model.scale_to_context`), else 0. A model without it cannot tell a
    scaled sum of 200 views from a sum of 16, so it cannot grow more certain past 16 views
    (:func:`world_model.checkpoint.add_count_input`; train with ``context_draw_max``)."""

    def __post_init__(self) -> None:
        """Validate on construction."""
        _check_ints(
            self,
            "image_size viewpoint_dim r_channels patch_channels tower_channels hidden_channels "
            "inference_channels z_channels num_layers core_kernel_size downsample".split(),
        )
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"ModelConfig.representation must be one of {REPRESENTATIONS}, got {self.representation!r}"
            )
        _check_flags(self, ["count_input"])
        _check_ints(self, ["view_channels", "map_channels"], least=0)
        if self.map_layout not in MAP_LAYOUTS:
            raise ValueError(f"ModelConfig.map_layout must be one of {MAP_LAYOUTS}, got {self.map_layout!r}")
        if self.map_channels and self.representation != "patch":
            raise ValueError(
                f"ModelConfig.map_channels needs the 'patch' representation network, got {self.representation!r}"
            )
        if self.core_kernel_size % 2 == 0:
            raise ValueError(f"ModelConfig.core_kernel_size must be odd, got {self.core_kernel_size}")
        if self.downsample & (self.downsample - 1):
            raise ValueError(f"ModelConfig.downsample must be a power of two, got {self.downsample}")
        if self.representation != "patch" and self.downsample < 2:
            raise ValueError(f"ModelConfig.downsample must be >= 2 for the paper tower, got {self.downsample}")
        if self.image_size % self.downsample:
            raise ValueError(
                f"ModelConfig.image_size ({self.image_size}) must be divisible by downsample ({self.downsample})"
            )
        if self.representation == "patch" and self.image_size % (2 * self.downsample):
            raise ValueError(
                f"ModelConfig.image_size ({self.image_size}) must be divisible by 2 * downsample for the patch "
                f"representation, got downsample {self.downsample}"
            )

    @property
    def hidden_size(self) -> int:
        """Side of the generator's hidden state (image_size / downsample)."""
        return self.image_size // self.downsample

    @property
    def representation_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, h, w)`` of the scene representation r (C counts the map head's channels)."""
        if self.representation in ("pool", "patch"):
            return (self.r_channels + self.map_size, 1, 1)
        return (self.r_channels, self.hidden_size, self.hidden_size)

    @property
    def map_shape(self) -> tuple[int, ...]:
        """Shape of the map head's output per view: ``(M,)`` for a vector head, ``(M, s, s)`` for a grid one."""
        if self.map_layout in ("grid", "coverage"):
            footprint = int(self.map_layout == "coverage")
            return (self.map_channels + footprint, self.hidden_size, self.hidden_size)
        return (self.map_channels,)

    @property
    def grid_map(self) -> bool:
        """Whether the map head draws a floor map (``grid`` or ``coverage``) rather than part of the vector r."""
        return bool(self.map_channels) and self.map_layout in ("grid", "coverage")

    @property
    def map_size(self) -> int:
        """Floats the map head adds to r per view (0 without one); a grid's are flattened."""
        return math.prod(self.map_shape)

    @property
    def representation_dim(self) -> int:
        """Length of r flattened."""
        c, h, w = self.representation_shape
        return c * h * w

    @property
    def representation_size(self) -> int:
        """Deprecated name of :attr:`representation_dim` (to be removed in the next release)."""
        warnings.warn("ModelConfig.representation_size is now representation_dim", DeprecationWarning, stacklevel=2)
        return self.representation_dim


#: How :class:`TrainConfig` draws a batch's number of context views.
CONTEXT_SAMPLINGS = ("uniform", "log_uniform")
#: Which of a scene's frames :class:`TrainConfig` takes as a batch item's context views.
CONTEXT_SELECTIONS = ("random", "window")


@dataclass(frozen=True)
class TrainConfig:
    """How a GQN is trained: batches, optimiser, schedules and the seed."""

    batch_size: int = 32
    """Queries per gradient step."""
    context_min: int = 1
    """Fewest context views in a training batch."""
    context_max: int = 16
    """Most context views in a training batch (drawn per batch as ``context_sampling`` says),
    unless ``context_draw_max`` is larger; the sum of a longer context, in training as in the
    env wrapper, is scaled to as many views' worth (:func:`world_model.model.scale_to_context`)."""
    context_draw_max: int = 0
    """If larger than ``context_max``: batches draw K in ``[context_min, context_draw_max]``, and a
    sum of more than ``context_max`` views is scaled to ``context_max`` views' worth, as the
    env wrapper renders a long episode. With ``ModelConfig.count_input`` the generator is told
    by how much, so that it can learn to grow more certain with every view. 0 (default): K
    stays within ``context_max``."""
    context_sampling: str = "uniform"
    """How a batch's number of context views K is drawn in ``[context_min, most_context]``:
    ``"uniform"``, or ``"log_uniform"`` (log K uniform, so that a wide range such as 1 to 216
    views trains small contexts as often as large ones: half the batches have K <= sqrt(max))."""
    context_selection: str = "random"
    """Which K of a scene's frames are the context: ``"random"`` (any K, spread over the whole
    walk), or ``"window"`` (K consecutive frames of the walk, the query any other frame), which
    is what an agent's first K steps give the env wrapper; collect with ``frame_skip=1`` so that
    consecutive frames are consecutive steps."""
    sigma_start: float = 2.0
    """Pixel standard deviation at step 0."""
    sigma_end: float = 0.7
    """Pixel standard deviation after annealing."""
    sigma_anneal_steps: int = 4000
    """Steps over which sigma anneals linearly (paper: 200k)."""
    lr_start: float = 5e-4
    """Adam learning rate at step 0."""
    lr_end: float = 5e-5
    """Adam learning rate after annealing."""
    lr_anneal_steps: int = 8000
    """Steps over which the learning rate anneals linearly (paper: 1.6M)."""
    grad_clip: float = 100.0
    """Max global gradient norm (0 disables clipping)."""
    seed: int = 0
    """Seed of the weights, batches and latent samples."""
    top_down_fraction: float = 0.0
    """Share of queries that are the scene's top-down view, where the scene has one (the
    collectors add it when this is > 0); context stays first-person."""
    view_dropout: float = 0.0
    """Share of queries rendered from r alone, their nearest-view input taken away
    (:func:`world_model.model.drop_views`; a model with ``ModelConfig.view_channels`` only).
    With the nearest view the generator can copy what a neighbouring frame showed, so r need
    not hold it; queries without one make r carry the scene. 0 (default) draws nothing."""
    freeze_representation: bool = False
    """Train the generator (and the map head, if the model has one: ``map_channels``) only;
    the rest of the representation network keeps its weights. What an agent observes
    through the model (r's first ``r_channels``, ``view_encoding``, ``patches``) then stays
    exactly as it was: for teaching a trained model new queries (top-down views)
    without changing the inputs of the agents trained on it."""

    def __post_init__(self) -> None:
        """Validate on construction."""
        _check_ints(self, "batch_size context_min context_max sigma_anneal_steps lr_anneal_steps".split())
        fraction = self.top_down_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ValueError(f"TrainConfig.top_down_fraction must be in [0, 1], got {fraction!r}")
        dropout = self.view_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"TrainConfig.view_dropout must be in [0, 1], got {dropout!r}")
        check_choice("TrainConfig.context_sampling", self.context_sampling, CONTEXT_SAMPLINGS)
        check_choice("TrainConfig.context_selection", self.context_selection, CONTEXT_SELECTIONS)
        _check_flags(self, ["freeze_representation"])
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"TrainConfig.seed must be an integer, got {self.seed!r}")
        if self.context_min > self.context_max:
            raise ValueError(f"TrainConfig.context_min ({self.context_min}) > context_max ({self.context_max})")
        _check_ints(self, ["context_draw_max"], least=0)
        for name in ("sigma_start", "sigma_end", "lr_start", "lr_end"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {value!r}")
        if not isinstance(self.grad_clip, (int, float)) or self.grad_clip < 0:
            raise ValueError(f"TrainConfig.grad_clip must be >= 0, got {self.grad_clip!r}")

    @property
    def most_context(self) -> int:
        """The most context views a training batch draws: ``max(context_max, context_draw_max)``."""
        return max(self.context_max, self.context_draw_max)


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "tiny": {
        "image_size": 16,
        "r_channels": 8,
        "patch_channels": 8,
        "tower_channels": 8,
        "hidden_channels": 8,
        "inference_channels": 8,
        "view_channels": 0,
        "z_channels": 2,
        "num_layers": 2,
        "batch_size": 4,
        "context_max": 4,
        "sigma_anneal_steps": 100,
        "lr_anneal_steps": 100,
    },
    "paper": {
        "image_size": 64,
        "representation": "pool",
        "r_channels": 256,
        "hidden_channels": 128,
        "inference_channels": 128,
        "view_channels": 0,
        "z_channels": 3,
        "num_layers": 12,
        "core_kernel_size": 5,
        "share_core": False,
        "batch_size": 36,
        "context_max": 15,
        "sigma_anneal_steps": 200_000,
        "lr_anneal_steps": 1_600_000,
        "grad_clip": 0.0,
    },
}
"""Each preset as the fields it changes from the defaults (the ``cpu`` recipe)."""


@dataclass(frozen=True)
class GQNConfig:
    """A GQN's architecture (``model``) and training recipe (``train``), saved with every checkpoint.

    Reading a field of either part through the whole (``config.image_size``,
    ``config.batch_size``) works too: no name is in both.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    """The architecture."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training recipe."""

    def __post_init__(self) -> None:
        """Check what the two parts must agree on."""
        if self.train.view_dropout > 0 and not self.model.view_channels:
            raise ValueError(
                f"TrainConfig.view_dropout={self.train.view_dropout} takes away the nearest-view input, "
                "which this model does not have (ModelConfig.view_channels = 0)"
            )

    def __getattr__(self, name: str) -> Any:
        """Read a field of ``model`` or ``train`` (or their derived properties) by its own name."""
        if name in ("model", "train") or name.startswith("__"):
            raise AttributeError(name)
        for part in (self.model, self.train):
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(f"GQNConfig has no field {name!r} (nor do its model and train parts)")

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls) -> GQNConfig:
        """A model for tests: 16x16 images, milliseconds per step."""
        return cls.preset("tiny")

    @classmethod
    def cpu(cls) -> GQNConfig:
        """The defaults: useful quality in about an hour on 2 CPU cores."""
        return cls.preset("cpu")

    @classmethod
    def paper(cls) -> GQNConfig:
        """The published sizes (Eslami et al. 2018), for GPUs."""
        return cls.preset("paper")

    @classmethod
    def preset(cls, name: str) -> GQNConfig:
        """A preset by name: ``tiny``, ``cpu`` or ``paper`` (the defaults with :data:`PRESETS` ``[name]`` over them)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls().replace(**PRESETS[name])

    def architecture(self) -> dict[str, Any]:
        """The fields that fix the parameters' shapes (two configs with equal ones share checkpoints)."""
        return dataclasses.asdict(self.model)

    def replace(self, **changes: Any) -> GQNConfig:
        """A copy with fields of either part changed by name (validated), e.g. ``replace(num_layers=4, seed=1)``."""
        unknown = sorted(set(changes) - set(MODEL_FIELDS) - set(TRAIN_FIELDS))
        if unknown:
            raise ValueError(f"Unknown GQNConfig fields {unknown}; model: {MODEL_FIELDS}, train: {TRAIN_FIELDS}")
        model = {k: v for k, v in changes.items() if k in MODEL_FIELDS}
        train = {k: v for k, v in changes.items() if k in TRAIN_FIELDS}
        return GQNConfig(dataclasses.replace(self.model, **model), dataclasses.replace(self.train, **train))

    def with_anneal_steps(self, steps: int) -> GQNConfig:
        """Anneal sigma over ``steps`` and the learning rate over ``2 * steps``."""
        if steps < 1:
            raise ValueError(f"anneal steps must be >= 1, got {steps}")
        return self.replace(sigma_anneal_steps=int(steps), lr_anneal_steps=int(2 * steps))

    def with_overrides(self, items: Sequence[str]) -> GQNConfig:
        """A copy with fields set from ``FIELD=VALUE`` strings, typed like the current values.

        ``config.with_overrides(["hidden_channels=48", "share_core=false"])``: what the
        command-line tools' ``--set`` takes; a field of either part goes by its own name.
        Raises ``ValueError`` naming a malformed item, an unknown field or a value of the wrong type.
        """
        changes: dict[str, Any] = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or (name not in MODEL_FIELDS and name not in TRAIN_FIELDS):
                raise ValueError(f"expected FIELD=VALUE with a GQNConfig field, got {item!r}")
            kind = type(getattr(self, name))
            if kind is bool:
                if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError(f"{name} takes true or false, got {value!r}")
                changes[name] = value.lower() in ("1", "true", "yes")
            else:
                try:
                    changes[name] = kind(value)
                except ValueError:
                    raise ValueError(f"{name} must be of type {kind.__name__}, got {value!r}") from None
        return self.replace(**changes)

    def changes_from(self, other: GQNConfig) -> dict[str, Any]:
        """The fields (of either part, by name) whose values differ from ``other``'s: ``{name: new value}``."""
        mine, theirs = self.flat(), other.flat()
        return {k: v for k, v in mine.items() if theirs[k] != v}

    def flat(self) -> dict[str, Any]:
        """Every field of both parts in one dict, by name."""
        return {**dataclasses.asdict(self.model), **dataclasses.asdict(self.train)}

    # ------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form ``{"model": {...}, "train": {...}}`` (saved with every checkpoint)."""
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GQNConfig:
        """Build from :meth:`to_dict` output, rejecting unknown keys (missing ones take the defaults).

        An older checkpoint's flat dict goes through :func:`world_model.checkpoint.migrate_config` first.
        """
        unknown = sorted(set(data) - {"model", "train"})
        if unknown:
            raise ValueError(f"Unknown GQNConfig keys {unknown} (expected 'model' and 'train')")
        parts = {}
        for key, kind, names in (("model", ModelConfig, MODEL_FIELDS), ("train", TrainConfig, TRAIN_FIELDS)):
            part = data.get(key, {})
            if not isinstance(part, Mapping):
                raise ValueError(f"GQNConfig {key!r} must be a dict, got {type(part).__name__}")
            extra = sorted(set(part) - set(names))
            if extra:
                raise ValueError(f"Unknown {kind.__name__} keys {extra}")
            parts[key] = kind(**part)
        return cls(**parts)
