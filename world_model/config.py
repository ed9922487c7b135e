"""Typed GQN configuration with presets.

Presets (classmethods):

* ``GQNConfig.tiny()``: for tests; a training step takes milliseconds.
* ``GQNConfig.cpu()``: the default; 32x32 images, a 64-channel r from the
  ``patch`` representation network (linear layers over 4x4-pixel patches, see
  representation.py: cheap enough to run at every env step), one generator
  ConvLSTM core (hidden 96, 3x3 kernels) shared across L=6 steps at 8x8, a
  narrow inference core (hidden 16), z 8 channels, batch 32, 1 to 16 context
  views per batch (the evaluation uses 16), and the generator also sees the
  context view nearest the query (``view_channels=48``, generator.py).
  Quality: 21.89 dB held out in a 60-minute two-rank CPU run (11952 steps),
  +2.42 over the nearest context view; the same preset without the nearest view
  scored 21.12 and +1.64 in 12698 steps (README, "World model").
  Speed (``python -m benchmarks.model_speed --threads 1``, float32, torch 2.13,
  K=6 context views, quiet machine): 71 training queries/s and 1.15 GFLOP per
  query, against 76 and 1.09 without the nearest view in the same run. Without
  it, measured before: 74 training queries/s, 1.09 GFLOP per query
  counted by FlopCounterMode, 0.88 of a 1024^3 float32 matmul timed in the same
  run. The previous preset (hidden 64 in both cores) ran 73 queries/s with 1.17
  GFLOP: at equal width the inference core is 60% of a step's FLOPs, and it
  only has to choose z, which carries a few nats at annealed sigma; narrowing it
  to 16 paid for a 1.5x wider generator. Neighbours in the same run: hidden 64
  with inference 32: 105 queries/s; hidden 96/inference 32: 64; hidden 128/
  inference 16: 50 (L=4: 72). The plain formulation of the ConvLSTM (every
  core input convolved at every step) ran 49 queries/s against 73-78 for the
  rewritten one, measured with an earlier preset (generator.py).
  Quality without the nearest view (README, "World model"): trained as two
  single-threaded DDP ranks on the 2 cores (a second intra-op thread barely
  speeds up one process), 12698 steps in an hour with ``--anneal-steps 6000``,
  21.12 dB held out, against 20.90 in 12371 steps for hidden 64. Tried on the previous preset and
  not kept: L=4 (16312 steps in the hour, 20.89 dB), hidden 48, batch 64, other
  learning rates, a wider patch network.
* ``GQNConfig.paper()``: the sizes of Eslami et al. (2018): r 256, the paper's
  tower, L 12 unshared cores, hidden 128, 5x5 kernels, 64x64 images, batch 36,
  sigma 2.0 -> 0.7 over 200k steps, learning rate 5e-4 -> 5e-5 over 1.6M steps.
  For GPUs.

The paper's annealing schedules assume ~2M steps. A CPU run does a few thousand,
so the ``cpu`` preset anneals sigma and the learning rate over its own expected
length (``sigma_anneal_steps``, ``lr_anneal_steps``); :meth:`with_anneal_steps`
rescales both for a given run length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REPRESENTATIONS = ("pool", "tower", "patch")
TOWER_LAYOUTS = ("compact", "paper")
ARCHITECTURE_FIELDS = (
    "image_size",
    "viewpoint_dim",
    "representation",
    "r_channels",
    "tower_channels",
    "tower_layout",
    "hidden_channels",
    "z_channels",
    "num_layers",
    "core_kernel_size",
    "share_core",
    "downsample",
    "inference_channels",
    "view_channels",
)


@dataclass(frozen=True)
class GQNConfig:
    """Sizes, schedules and training settings of a GQN."""

    image_size: int = 32
    """Side of the square RGB images the model takes and renders."""
    viewpoint_dim: int = 7
    """Length of the viewpoint vector (position 3, cos/sin yaw, cos/sin pitch)."""
    representation: str = "patch"
    """``pool``: one r_channels vector per scene; ``tower``: an r_channels map at hidden resolution;
    ``patch``: a vector from linear layers over image patches (cheap per frame, see representation.py)."""
    r_channels: int = 64
    """Channels of the scene representation r."""
    tower_channels: int = 64
    """Width of the tower's convolutions (``compact``) or of its narrow ones (``paper``: 128)."""
    tower_layout: str = "compact"
    """``paper``: the published tower layer for layer; ``compact``: one convolution per stage."""
    hidden_channels: int = 64
    """ConvLSTM hidden channels of the generator (and of the inference network unless
    ``inference_channels`` is set)."""
    inference_channels: int = 0
    """ConvLSTM hidden channels of the inference network; 0 (the default, and the value of every
    checkpoint saved before this field existed): ``hidden_channels``, as in the paper. The inference
    core only has to say what z should carry, which at annealed sigma is a few nats, so it can be
    narrower than the generator's; at equal width it is most of a training step's cost."""
    view_channels: int = 0
    """Channels of the generator's second input: the context view nearest to the query
    (see generator.py), embedded per ``downsample``-pixel patch. 0 (the default, and the value
    of every checkpoint saved before this field existed): the generator sees r and v only,
    as in the paper."""
    z_channels: int = 8
    """Channels of the latent z per generation step."""
    num_layers: int = 6
    """Number of ConvDRAW generation steps L."""
    core_kernel_size: int = 3
    """Kernel size of the ConvLSTM cores and of the prior/posterior heads."""
    share_core: bool = True
    """Share one ConvLSTM core across the L steps (the paper unshares them)."""
    downsample: int = 4
    """Image resolution / hidden resolution (4 in the paper: 64x64 -> 16x16)."""
    batch_size: int = 32
    """Queries per gradient step."""
    context_min: int = 1
    """Fewest context views in a training batch."""
    context_max: int = 16
    """Most context views in a training batch (drawn uniformly per batch)."""
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

    def __post_init__(self) -> None:
        """Validate on construction."""
        self.validate()

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls) -> GQNConfig:
        """A model for tests: 16x16 images, milliseconds per step."""
        return cls(
            image_size=16,
            r_channels=8,
            tower_channels=8,
            hidden_channels=8,
            z_channels=2,
            num_layers=2,
            batch_size=4,
            context_max=4,
            sigma_anneal_steps=100,
            lr_anneal_steps=100,
        )

    @classmethod
    def cpu(cls) -> GQNConfig:
        """The default: useful quality in about an hour on 2 CPU cores (numbers in the module docstring)."""
        return cls(hidden_channels=96, inference_channels=16, view_channels=48)

    @classmethod
    def paper(cls) -> GQNConfig:
        """The published sizes (Eslami et al. 2018), for GPUs."""
        return cls(
            image_size=64,
            representation="pool",
            r_channels=256,
            tower_channels=128,
            tower_layout="paper",
            hidden_channels=128,
            z_channels=3,
            num_layers=12,
            core_kernel_size=5,
            share_core=False,
            downsample=4,
            batch_size=36,
            context_max=15,
            sigma_anneal_steps=200_000,
            lr_anneal_steps=1_600_000,
            grad_clip=0.0,
        )

    @classmethod
    def preset(cls, name: str) -> GQNConfig:
        """A preset by name: ``tiny``, ``cpu`` or ``paper``."""
        presets = {"tiny": cls.tiny, "cpu": cls.cpu, "paper": cls.paper}
        if name not in presets:
            raise ValueError(f"Unknown preset {name!r}; choose from {sorted(presets)}")
        return presets[name]()

    def architecture(self) -> dict[str, Any]:
        """The fields that fix the parameters' shapes (two configs with equal ones share checkpoints)."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}

    def replace(self, **changes: Any) -> GQNConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def with_anneal_steps(self, steps: int) -> GQNConfig:
        """Anneal sigma over ``steps`` and the learning rate over ``2 * steps``."""
        if steps < 1:
            raise ValueError(f"anneal steps must be >= 1, got {steps}")
        return self.replace(sigma_anneal_steps=int(steps), lr_anneal_steps=int(2 * steps))

    def with_overrides(self, items: Sequence[str]) -> GQNConfig:
        """A copy with fields set from ``FIELD=VALUE`` strings, typed like the current values.

        ``config.with_overrides(["hidden_channels=48", "share_core=false"])``: what the
        command-line tools' ``--set`` takes. Raises ``ValueError`` naming a malformed
        item, an unknown field or a value of the wrong type.
        """
        changes: dict[str, Any] = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or name not in {f.name for f in dataclasses.fields(self)}:
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

    # ---------------------------------------------------------------- derived
    @property
    def hidden_size(self) -> int:
        """Side of the generator's hidden state (image_size / downsample)."""
        return self.image_size // self.downsample

    @property
    def inference_size(self) -> int:
        """Hidden channels of the inference core (``inference_channels`` or, if 0, ``hidden_channels``)."""
        return self.inference_channels or self.hidden_channels

    @property
    def representation_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, h, w)`` of the scene representation r."""
        if self.representation in ("pool", "patch"):
            return (self.r_channels, 1, 1)
        return (self.r_channels, self.hidden_size, self.hidden_size)

    @property
    def representation_size(self) -> int:
        """Length of r flattened."""
        c, h, w = self.representation_shape
        return c * h * w

    # ------------------------------------------------------------- (de)serialise
    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and value."""
        positive = (
            "image_size viewpoint_dim r_channels tower_channels hidden_channels z_channels num_layers "
            "core_kernel_size downsample batch_size context_min context_max sigma_anneal_steps lr_anneal_steps"
        ).split()
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GQNConfig.{name} must be a positive integer, got {value!r}")
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"GQNConfig.representation must be one of {REPRESENTATIONS}, got {self.representation!r}")
        if self.tower_layout not in TOWER_LAYOUTS:
            raise ValueError(f"GQNConfig.tower_layout must be one of {TOWER_LAYOUTS}, got {self.tower_layout!r}")
        for name in ("inference_channels", "view_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"GQNConfig.{name} must be an integer >= 0, got {value!r}")
        if self.tower_layout == "paper" and self.downsample < 2:
            raise ValueError(f"GQNConfig.downsample must be >= 2 for the paper tower, got {self.downsample}")
        if self.core_kernel_size % 2 == 0:
            raise ValueError(f"GQNConfig.core_kernel_size must be odd, got {self.core_kernel_size}")
        if self.downsample & (self.downsample - 1):
            raise ValueError(f"GQNConfig.downsample must be a power of two, got {self.downsample}")
        if self.image_size % self.downsample:
            raise ValueError(
                f"GQNConfig.image_size ({self.image_size}) must be divisible by downsample ({self.downsample})"
            )
        if self.representation == "patch" and self.image_size % (2 * self.downsample):
            raise ValueError(
                f"GQNConfig.image_size ({self.image_size}) must be divisible by 2 * downsample for the patch "
                f"representation, got downsample {self.downsample}"
            )
        if self.context_min > self.context_max:
            raise ValueError(f"GQNConfig.context_min ({self.context_min}) > context_max ({self.context_max})")
        for name in ("sigma_start", "sigma_end", "lr_start", "lr_end"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"GQNConfig.{name} must be > 0, got {value!r}")
        if self.grad_clip < 0:
            raise ValueError(f"GQNConfig.grad_clip must be >= 0, got {self.grad_clip!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (saved with every checkpoint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GQNConfig:
        """Build from :meth:`to_dict` output, rejecting unknown keys (missing ones take the defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown GQNConfig keys {unknown}")
        return cls(**data)
