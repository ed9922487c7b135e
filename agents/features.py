"""A features extractor made for GQNMaze's Dict observation.

SB3's default for Dict spaces (``CombinedExtractor``) flattens every vector key
and concatenates them unchanged, so the policy's first layer sees a 64-wide
representation next to a 7-wide viewpoint at whatever scale each has. This
extractor gives each key a small network of its own, chosen once from the
key's space (as SB3's ``CombinedExtractor`` keeps a ``ModuleDict``):

* a spatial map ``(C, h, w)`` (the ``patches`` key: the current frame's
  per-patch features): a 1x1 then a 3x3 convolution, flattened, so the policy
  keeps *where* in the image a feature is; with ``map_norm="layer"``, a LayerNorm
  over the whole map first (each frame's map put on unit scale, for a map that
  is not standardised by running statistics);
* a table of records ``(n, f)`` (the ``landmarks`` key: one row of ``f`` fields
  per feature channel): :class:`RecordSelect`, which learns *which* few rows to
  read, so that a policy can follow the one channel that remembers the goal
  without first learning to ignore the other 63;
* a vector (``representation``, ``view_encoding``, ``viewpoint``): LayerNorm then a
  linear layer with ReLU; LayerNorm puts every key on one scale whatever the
  world model's output range, with no running statistics to carry around. With
  ``vector_reading="raw"`` a vector goes to the heads as it is (already
  standardised by ``VecNormalize``, as the agents of :mod:`agents.rl` have it),
  the way ``MlpPolicy`` reads a state vector;
* an image (``image``, uint8): SB3's ``NatureCNN``.

The outputs are concatenated; the policy and value heads sit on top as usual.

:class:`ProjectedExtractor` is the other reading: no layer of its own, every key
flattened for the heads as ``MlpPolicy`` reads a state, the wide map first cut
down by a fixed whitening PCA (:func:`fit_projection`).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

#: How :class:`GQNMazeExtractor` scales a spatial map before its convolutions.
MAP_NORMS = ("none", "layer")
#: How :class:`GQNMazeExtractor` reads a vector key: its own layer, or as it is.
VECTOR_READINGS = ("layer", "raw")


class RecordSelect(nn.Module):
    """Read a table of ``n`` records of ``f`` fields through ``heads`` learned selections.

    Each record goes through one shared layer (``f -> width``, ReLU); each head
    averages the records with its own softmax weights over the ``n`` rows, which
    start uniform and are learned per row (a row's identity, not its content,
    decides its weight: row ``i`` is always the same feature channel). Output:
    ``heads * width`` features.

    ``sharpness`` multiplies the learned logits. Adam moves a parameter by at
    most about its learning rate per step, whatever the gradient's size, and
    less when the gradient's sign is noisy. At PPO's 3e-4 and the 7,800 updates
    of a 100k-step run (``steady`` settings) a logit moves by 2.3 at the very
    most, so unscaled a head stays close to an average of all 64 rows. With
    ``sharpness`` 10 the same updates can make it pick one row.
    """

    def __init__(self, records: int, fields: int, heads: int = 4, width: int = 16, sharpness: float = 1.0) -> None:
        super().__init__()
        if not sharpness > 0:
            raise ValueError(f"sharpness must be positive, got {sharpness}")
        self.encode = nn.Sequential(nn.Linear(fields, width), nn.ReLU())
        self.logits = nn.Parameter(torch.zeros(heads, records))
        self.sharpness = float(sharpness)
        self.out_features = heads * width

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        """``(N, n, f)`` -> ``(N, heads * width)``."""
        weights = torch.softmax(self.sharpness * self.logits, dim=-1)  # (heads, n)
        return torch.einsum("kn,bnw->bkw", weights, self.encode(table)).flatten(1)


class GQNMazeExtractor(BaseFeaturesExtractor):
    """One small network per observation key, outputs concatenated.

    Args:
        observation_space: A ``Dict`` of ``Box`` spaces.
        vector_features: Output width of each vector key's layer.
        map_channels: Channels of the convolutions over a spatial map.
        select_sharpness: :class:`RecordSelect`'s ``sharpness`` for a table of records.
        plain_keys: Vector keys read by the linear layer alone, without LayerNorm (for
            inputs already on a fixed scale, such as the oracle's goal fields).
        map_norm: ``"none"``: a spatial map goes into its convolutions as it is;
            ``"layer"``: through a LayerNorm over ``(C, h, w)`` first.
        vector_reading: ``"layer"``: each vector key through (LayerNorm and) a linear
            layer of ``vector_features`` with ReLU; ``"raw"``: passed on unchanged.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        vector_features: int = 64,
        map_channels: int = 32,
        select_sharpness: float = 1.0,
        plain_keys: tuple[str, ...] = (),
        map_norm: str = "none",
        vector_reading: str = "layer",
    ) -> None:
        if map_norm not in MAP_NORMS:
            raise ValueError(f"map_norm must be one of {MAP_NORMS}, got {map_norm!r}")
        if vector_reading not in VECTOR_READINGS:
            raise ValueError(f"vector_reading must be one of {VECTOR_READINGS}, got {vector_reading!r}")
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ValueError(f"GQNMazeExtractor needs a Dict observation space, got {observation_space}")
        nets: dict[str, nn.Module] = {}
        total = 0
        for key, space in observation_space.spaces.items():
            if not isinstance(space, gym.spaces.Box):
                raise ValueError(f"Observation key {key!r} must be a Box, got {space}")
            if is_image_space(space, check_channels=False) and space.dtype == "uint8":
                nets[key] = NatureCNN(space, features_dim=256, normalized_image=False)
                total += 256
            elif len(space.shape) == 3:  # (C, h, w) feature map
                c, h, w = space.shape
                convs = [
                    nn.Conv2d(c, map_channels, 1),
                    nn.ReLU(),
                    nn.Conv2d(map_channels, map_channels, 3, padding=1),
                    nn.ReLU(),
                    nn.Flatten(),
                ]
                # eps far below a frame's variance (the bundled model's maps: about 1e-4)
                norm = [nn.LayerNorm([c, h, w], eps=1e-8)] if map_norm == "layer" else []
                nets[key] = nn.Sequential(*norm, *convs)
                total += map_channels * h * w
            elif len(space.shape) == 2:  # (n, f) records
                nets[key] = RecordSelect(*space.shape, sharpness=select_sharpness)
                total += nets[key].out_features
            elif len(space.shape) == 1 and vector_reading == "raw":
                nets[key] = nn.Identity()
                total += space.shape[0]
            elif len(space.shape) == 1:
                norm = nn.Identity() if key in plain_keys else nn.LayerNorm(space.shape[0])
                nets[key] = nn.Sequential(norm, nn.Linear(space.shape[0], vector_features), nn.ReLU())
                total += vector_features
            else:
                raise ValueError(f"Observation key {key!r} has an unsupported shape {space.shape}")
        super().__init__(observation_space, features_dim=total)
        self.nets = nn.ModuleDict(nets)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N, features_dim)`` features of a batch of Dict observations."""
        return torch.cat([net(observations[key]) for key, net in self.nets.items()], dim=1)


def fit_projection(samples: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """A whitening PCA of ``(N, F)`` samples: ``(mean (F,), basis (F, dims))``, float32.

    ``(x - mean) @ basis`` gives the top ``dims`` principal components of ``x``, each
    scaled to unit variance over the samples (components with no variance stay at zero).
    """
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    if len(x) < 2 or not 1 <= dims <= min(x.shape):
        raise ValueError(f"need (N >= 2, F) samples and 1 <= dims <= min(N, F), got {x.shape} and dims={dims}")
    if not np.isfinite(x).all():
        raise ValueError("samples must be finite")
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)  # rows of vt: principal directions
    scale = singular[:dims] / math.sqrt(len(x) - 1)  # each component's standard deviation
    basis = vt[:dims].T / np.where(scale > 1e-12, scale, np.inf)  # (F, dims)
    return mean.astype(np.float32), basis.astype(np.float32)


class ProjectedExtractor(BaseFeaturesExtractor):
    """Every key flattened, the ones in ``projections`` through a fixed linear projection first.

    Nothing in it learns: the policy and value heads read the features directly, as
    ``MlpPolicy`` reads a state vector. A wide key (the ``patches`` map, 1,024 floats) is
    cut down to a few dense features by a projection fitted beforehand without labels
    (:func:`fit_projection`, a whitening PCA of the key over walks of other scenes).

    Args:
        observation_space: A ``Dict`` of ``Box`` spaces.
        projections: ``key -> (mean (F,), basis (F, k))``, F the key's flattened size.
    """

    def __init__(
        self, observation_space: gym.spaces.Dict, projections: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ValueError(f"ProjectedExtractor needs a Dict observation space, got {observation_space}")
        unknown = sorted(set(projections) - set(observation_space.spaces))
        if unknown:
            keys = sorted(observation_space.spaces)
            raise ValueError(f"projections for keys {unknown} not in the observation's {keys}")
        total = 0
        for key, space in observation_space.spaces.items():
            size = int(np.prod(space.shape))
            if key in projections:
                mean, basis = projections[key]
                if np.shape(mean) != (size,) or np.ndim(basis) != 2 or np.shape(basis)[0] != size:
                    raise ValueError(
                        f"projection of {key!r} must be (mean ({size},), basis ({size}, k)), "
                        f"got {np.shape(mean)} and {np.shape(basis)}"
                    )
                size = np.shape(basis)[1]
            total += size
        super().__init__(observation_space, features_dim=total)
        self.keys = list(observation_space.spaces)
        for key, (mean, basis) in projections.items():
            self.register_buffer(f"{key}_mean", torch.as_tensor(np.asarray(mean, np.float32)))
            self.register_buffer(f"{key}_basis", torch.as_tensor(np.asarray(basis, np.float32)))
        self.projected = tuple(projections)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N, features_dim)`` features of a batch of Dict observations."""
        parts = []
        for key in self.keys:
            x = observations[key].flatten(1).float()
            if key in self.projected:
                x = (x - getattr(self, f"{key}_mean")) @ getattr(self, f"{key}_basis")
            parts.append(x)
        return torch.cat(parts, dim=1)
