"""Representation networks: one (image, viewpoint) pair -> one per-view representation.

Both variants follow Eslami et al. (2018, supplementary figure S1):

* ``TowerRepresentation``: strided 2x2 convolutions bring the image down to the
  generator's hidden resolution, the viewpoint is broadcast and concatenated
  there, and residual 3x3 convolutions mix them: output ``(N, r, h, w)``.
* ``PoolRepresentation``: the tower followed by average pooling: ``(N, r, 1, 1)``.

And one of our own, for agents that encode a frame at every env step:

* ``PatchRepresentation``: a vector r like ``pool``, computed by linear layers
  only: non-overlapping ``downsample``-pixel patches, a 2x2 merge of
  neighbouring patches, and a dense head over the whole (position-aware) map and
  the viewpoint. About 1 MFLOP per 32x32 view against 13 for a one-convolution-per-stage tower.
  The reason is per-call cost, not FLOPs: on one CPU thread a single 3x3
  convolution over a 4x4 map with 64 channels takes ~67 us (oneDNN's small-input
  path) while a 64x64 linear layer takes ~5 us, so the tower costs ~0.5 ms per
  frame and this network a fraction of that (``benchmarks/gqn_maze_speed.py``).

The tower is the published one, layer for layer: a 2x2/2 convolution, a
residual block (3x3 then 2x2/2, skip 2x2/2) down to the hidden resolution, the
viewpoint concatenated, a residual block of 3x3 convolutions (skip 3x3), and a
1x1 convolution. Wide layers have ``r_channels``, narrow ones ``tower_channels``
(256 and 128 in the paper). Any ``downsample`` >= 2 that is a power of two works:
the first ``log2(downsample) - 1`` strided convolutions form a stem before the
last, residual, downsampling stage. (A one-convolution-per-stage ``compact``
layout existed; no preset used it, and it was removed.)

The scene representation is the *sum* of these over a scene's views (done by
the model, so it can also be updated one frame at a time).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from world_model.config import ModelConfig


def _broadcast(viewpoints: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Viewpoints ``(N, D)`` broadcast to ``(N, D, h, w)`` of ``like``."""
    return viewpoints[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])  # (N, D, h, w)


class TowerRepresentation(nn.Module):
    """The paper's tower, sized by the config (no hard-coded channel arithmetic).

    Args:
        config: Uses ``r_channels`` (wide layers), ``tower_channels`` (narrow ones),
            ``viewpoint_dim`` and ``downsample``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, v, r = config.tower_channels, config.viewpoint_dim, config.r_channels
        stages = int(math.log2(config.downsample))
        layers: list[nn.Module] = []
        in_ch = 3
        for _ in range(stages - 1):
            layers += [nn.Conv2d(in_ch, r, 2, stride=2), nn.ReLU()]
            in_ch = r
        self.stem = nn.Sequential(*layers)
        self.skip1 = nn.Conv2d(in_ch, r, 2, stride=2)
        self.conv1 = nn.Conv2d(in_ch, c, 3, padding=1)
        self.down1 = nn.Conv2d(c, r, 2, stride=2)
        self.skip2 = nn.Conv2d(r + v, r, 3, padding=1)
        self.conv2 = nn.Conv2d(r + v, c, 3, padding=1)
        self.conv3 = nn.Conv2d(c, r, 3, padding=1)
        self.out = nn.Conv2d(r, r, 1)

    def forward(self, images: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """Encode views.

        Args:
            images: ``(N, 3, H, W)`` floats in [0, 1].
            viewpoints: ``(N, D)``.

        Returns:
            ``(N, r_channels, H / downsample, W / downsample)``.
        """
        x = self.stem(images)  # (N, r, H', W'): (N, 3, H, W) when the stem is empty
        skip = F.relu(self.skip1(x))  # (N, r, h, w)
        x = F.relu(self.down1(F.relu(self.conv1(x)))) + skip  # (N, r, h, w)
        x = torch.cat([x, _broadcast(viewpoints, x)], dim=1)  # (N, r + D, h, w)
        skip = F.relu(self.skip2(x))  # (N, r, h, w)
        x = F.relu(self.conv3(F.relu(self.conv2(x)))) + skip  # (N, r, h, w)
        return F.relu(self.out(x))  # (N, r, h, w)


class PoolRepresentation(nn.Module):
    """The tower followed by spatial average pooling: one vector per view."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.tower = TowerRepresentation(config)

    def forward(self, images: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """Encode views to ``(N, r_channels, 1, 1)``."""
        return self.tower(images, viewpoints).mean(dim=(2, 3), keepdim=True)  # (N, r, 1, 1)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Non-overlapping square patches, channels last: ``(N, 3, S, S)`` -> ``(N, S/p, S/p, 3*p*p)``."""
    n, _, size, _ = images.shape
    g = size // patch
    # (N, 3, g, p, g, p) -> (N, g, g, 3, p, p) -> one row of 3*p*p values per patch
    return images.view(n, 3, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5).reshape(n, g, g, 3 * patch * patch)


#: Half the side of the floor grid of a ``grid`` map head, in viewpoint units: the floor
#: spans [-1, 1]; GQNMazeScene's top-down view adds a 1 m margin, 1.21 for a 3x3 maze.
MAP_EXTENT = 1.2
#: How far ahead, and as wide, a view's grid of features reaches, in viewpoint units (a 3x3
#: maze's room is 0.67 across).
MAP_REACH = 1.0


def place_on_floor(view: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
    """Move a grid of features from the camera's frame onto the floor: ``(N, M, s, s)`` -> ``(N, M, s, s)``.

    ``view`` covers the floor in front of the camera, :data:`MAP_REACH` ahead and as wide:
    rows from near (top) to far, columns from the camera's left to its right. The output
    covers the whole floor like the top-down view (columns along +x, rows along +z, half
    side :data:`MAP_EXTENT`), zero where the camera did not look. Bilinear sampling,
    differentiable in ``view``.

    Args:
        view: ``(N, M, s, s)`` features in the camera's frame.
        viewpoints: ``(N, D)``: ``x`` at 0, ``z`` at 2, ``cos`` and ``sin`` of the yaw at 3 and 4
            (gqn_env/envs/viewpoint.py: yaw 0 looks along +x, positive turns left).
    """
    x, z, cos, sin = viewpoints[:, 0], viewpoints[:, 2], viewpoints[:, 3], viewpoints[:, 4]
    # A floor cell at output coordinates (u, v) in [-1, 1] lies at (X u, X v). Relative to the
    # camera, forward = dx cos - dz sin and right = dx sin + dz cos (MiniWorld's direction
    # (cos, -sin) and right (sin, cos)); the view's grid coordinates are right * 2 / reach and
    # forward * 2 / reach - 1: affine in (u, v), which is what affine_grid takes.
    k, ext = 2.0 / MAP_REACH, MAP_EXTENT
    theta = torch.stack(
        [
            torch.stack([k * ext * sin, k * ext * cos, -k * (x * sin + z * cos)], dim=1),
            torch.stack([k * ext * cos, -k * ext * sin, -k * (x * cos - z * sin) - 1.0], dim=1),
        ],
        dim=1,
    )  # (N, 2, 3)
    grid = F.affine_grid(theta, list(view.shape), align_corners=False)  # (N, s, s, 2)
    return F.grid_sample(view, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class PatchRepresentation(nn.Module):
    """Patch embedding, a 2x2 patch merge and a dense head: one vector per view.

    With ``config.map_channels`` = M > 0 a second head, the *map head*, reads the
    same patch map and adds its output after the first head's ``r_channels``: with
    ``map_layout="vector"`` a dense head of the first's shape (M floats per view);
    with ``"grid"`` one linear layer to an ``(M, s, s)`` grid of the floor in front
    of the camera, which :func:`place_on_floor` moves to where the viewpoint says the
    camera looked, flattened; ``"coverage"`` adds a channel of ones to that grid
    before it is moved, so that the sum over views counts the views that looked at
    each floor cell. Only the generator reads the map head's output; agents
    observe the first head (and the patch map), so a map head can be trained for
    top-down queries while everything agents observe stays fixed
    (``TrainConfig.freeze_representation``).

    Args:
        config: Uses ``patch_channels`` (width), ``r_channels``, ``map_channels``,
            ``viewpoint_dim``, ``downsample`` (patch side) and ``image_size``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, p = config.patch_channels, config.downsample
        self.patch = p
        self.grid = config.image_size // p // 2  # side of the map after the merge
        self.embed = nn.Linear(3 * p * p, c)
        self.merge = nn.Linear(4 * c, c)
        head_in = self.grid * self.grid * c + config.viewpoint_dim
        self.mix = nn.Linear(head_in, c)
        self.out = nn.Linear(c, config.r_channels)
        self.map_head: nn.Module | None = None
        self.map_grid = 0  # side of the floor grid of a ``grid`` or ``coverage`` map head
        self.footprint = False
        if config.grid_map:
            self.map_grid = config.hidden_size
            self.footprint = config.map_layout == "coverage"  # add a channel of ones: where the view looked
            self.map_head = nn.Linear(self.grid * self.grid * c, config.map_channels * self.map_grid**2)
        elif config.map_channels:
            self.map_head = nn.Sequential(nn.Linear(head_in, c), nn.ReLU(), nn.Linear(c, config.map_channels))

    def patch_map(self, images: torch.Tensor) -> torch.Tensor:
        """The image's per-patch features before the dense head: ``(N, 3, S, S)`` -> ``(N, g, g, c)``.

        Each of the ``g x g`` cells describes one ``2 * downsample``-pixel square of
        the image, so the map keeps where in the view a feature is, which the
        pooled vector r mixes away. (GQNMaze observes it as ``patches``.)
        """
        n, g = images.shape[0], self.grid
        x = F.relu(self.embed(patchify(images, self.patch)))  # (N, 2g, 2g, c)
        # merge each 2x2 block of patches: (N, g, 2, g, 2, c) -> (N, g, g, 4c)
        x = x.view(n, g, 2, g, 2, -1).permute(0, 1, 3, 2, 4, 5).reshape(n, g, g, -1)
        return F.relu(self.merge(x))  # (N, g, g, c)

    def head(self, patches: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """One view's representation from its :meth:`patch_map` ``(N, g, g, c)`` and viewpoints: ``(N, R, 1, 1)``.

        R is ``r_channels``, plus ``map_channels`` from the map head after them when there is one.
        """
        x = torch.cat([patches.reshape(len(patches), -1), viewpoints], dim=1)  # (N, g*g*c + D)
        r = self.out(F.relu(self.mix(x)))  # (N, r)
        if self.map_grid:
            n, side = len(patches), self.map_grid
            view = self.map_head(patches.reshape(n, -1)).view(n, -1, side, side)  # (N, M, s, s), camera frame
            if self.footprint:
                view = torch.cat([view, view.new_ones(n, 1, side, side)], dim=1)  # (N, M + 1, s, s)
            r = torch.cat([r, place_on_floor(view, viewpoints).flatten(1)], dim=1)  # (N, r + M*s*s)
        elif self.map_head is not None:
            r = torch.cat([r, self.map_head(x)], dim=1)  # (N, r + M)
        return r[:, :, None, None]  # (N, R, 1, 1)

    def forward(self, images: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """Encode views: images ``(N, 3, S, S)`` in [0, 1], viewpoints ``(N, D)`` -> ``(N, r, 1, 1)``."""
        return self.head(self.patch_map(images), viewpoints)


class NumpyPatchEncoder:
    """:class:`PatchRepresentation`'s forward pass in numpy, for a few frames at a time on the CPU.

    For one 32x32 frame torch's per-operation overhead costs more than the
    arithmetic (four small matrix products); numpy runs the same pass in about a
    third of the time, which is most of what an environment step pays for its
    encoding. The weights are copied from the module whenever its parameters
    change (their version counters move on every in-place update, an optimizer
    step included), so a model trained online is seen at the next call. Results
    match the torch pass to float32 rounding, not bit for bit.

    Args:
        net: The (CPU) representation network to mirror.
    """

    def __init__(self, net: PatchRepresentation) -> None:
        self.net = net
        self._key: tuple | None = None
        self._weights: dict[str, np.ndarray] = {}

    def _current(self) -> dict[str, np.ndarray]:
        # Looked up per call (cheap next to the pass): load_state_dict(assign=True) may swap the tensors.
        params = dict(self.net.named_parameters())
        key = tuple((id(t), t._version) for t in params.values())
        if key != self._key:
            # Linear layers as (in, out) matrices: x @ W + b.
            self._weights = {
                name: (t.detach().numpy().T.copy() if name.endswith("weight") else t.detach().numpy().copy())
                for name, t in params.items()
            }
            self._key = key
        return self._weights

    def __call__(
        self, images: np.ndarray, viewpoints: np.ndarray, map_head: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(N, S, S, 3)`` uint8 frames, ``(N, D)`` viewpoints -> ``(r (N, R, 1, 1), patches (N, c, g, g))``.

        ``map_head=False`` leaves out a map head's channels (R is then ``r_channels``);
        a grid or coverage map head's are only encoded with torch, so for such a network
        ``map_head`` must be false.
        """
        if map_head and self.net.map_grid:
            raise ValueError("NumpyPatchEncoder does not place a grid map head's features: pass map_head=False")
        w = self._current()
        n, size = images.shape[0], images.shape[1]
        p, g = self.net.patch, self.net.grid
        side = size // p  # patches per side before the merge (2g)
        # (N, S, S, 3) -> (N, 2g, 2g, 3*p*p), each patch's values in patchify's (3, p, p) order
        x = images.astype(np.float32).reshape(n, side, p, side, p, 3).transpose(0, 1, 3, 5, 2, 4)
        x = x.reshape(n, side, side, 3 * p * p) * np.float32(1 / 255)
        x = np.maximum(x @ w["embed.weight"] + w["embed.bias"], 0)  # (N, 2g, 2g, c)
        x = x.reshape(n, g, 2, g, 2, -1).transpose(0, 1, 3, 2, 4, 5).reshape(n, g, g, -1)
        patches = np.maximum(x @ w["merge.weight"] + w["merge.bias"], 0)  # (N, g, g, c)
        head_in = np.concatenate([patches.reshape(n, -1), viewpoints.astype(np.float32)], axis=1)
        hidden = np.maximum(head_in @ w["mix.weight"] + w["mix.bias"], 0)
        r = hidden @ w["out.weight"] + w["out.bias"]  # (N, r)
        if map_head and "map_head.0.weight" in w:  # the map head's channels after the first head's
            hidden = np.maximum(head_in @ w["map_head.0.weight"] + w["map_head.0.bias"], 0)
            r = np.concatenate([r, hidden @ w["map_head.2.weight"] + w["map_head.2.bias"]], axis=1)  # (N, r + M)
        return r[:, :, None, None], patches.transpose(0, 3, 1, 2)


def make_representation(config: ModelConfig) -> nn.Module:
    """The representation network the config names."""
    kinds = {"pool": PoolRepresentation, "tower": TowerRepresentation, "patch": PatchRepresentation}
    return kinds[config.representation](config)
