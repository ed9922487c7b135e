"""Representation networks: one (image, viewpoint) pair -> one per-view representation.

Both variants follow Eslami et al. (2018, supplementary figure S1):

* ``TowerRepresentation``: strided 2x2 convolutions bring the image down to the
  generator's hidden resolution, the viewpoint is broadcast and concatenated
  there, and residual 3x3 convolutions mix them: output ``(N, r, h, w)``.
* ``PoolRepresentation``: the tower followed by average pooling: ``(N, r, 1, 1)``.

The scene representation is the *sum* of these over a scene's views (done by
the model, so it can also be updated one frame at a time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from world_model.config import GQNConfig


class TowerRepresentation(nn.Module):
    """The paper's tower, sized by the config (no hard-coded channel arithmetic)."""

    def __init__(self, config: GQNConfig) -> None:
        super().__init__()
        c, v = config.tower_channels, config.viewpoint_dim
        stages = int(math.log2(config.downsample))
        layers: list[nn.Module] = []
        in_ch = 3
        for _ in range(stages):
            layers += [nn.Conv2d(in_ch, c, 2, stride=2), nn.ReLU()]
            in_ch = c
        self.stem = nn.Sequential(*layers) if layers else nn.Conv2d(3, c, 3, padding=1)
        self.mix = nn.Conv2d(c + v, c, 3, padding=1)
        self.res = nn.Conv2d(c, c, 3, padding=1)
        self.out = nn.Conv2d(c, config.r_channels, 1)

    def forward(self, images: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """Encode views.

        Args:
            images: ``(N, 3, H, W)`` floats in [0, 1].
            viewpoints: ``(N, D)``.

        Returns:
            ``(N, r_channels, H / downsample, W / downsample)``.
        """
        x = self.stem(images)  # (N, c, h, w)
        v = viewpoints[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])  # (N, D, h, w)
        x = F.relu(self.mix(torch.cat([x, v], dim=1)))  # (N, c, h, w)
        x = x + F.relu(self.res(x))
        return self.out(x)  # (N, r, h, w)


class PoolRepresentation(nn.Module):
    """The tower followed by spatial average pooling: one vector per view."""

    def __init__(self, config: GQNConfig) -> None:
        super().__init__()
        self.tower = TowerRepresentation(config)

    def forward(self, images: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """Encode views to ``(N, r_channels, 1, 1)``."""
        return self.tower(images, viewpoints).mean(dim=(2, 3), keepdim=True)


def make_representation(config: GQNConfig) -> nn.Module:
    """The representation network the config names."""
    return PoolRepresentation(config) if config.representation == "pool" else TowerRepresentation(config)
