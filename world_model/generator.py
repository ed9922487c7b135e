"""The ConvDRAW generation network (Eslami et al. 2018; Gregor et al. 2016).

The L-step loop lives in one place, :meth:`ConvDRAW.run`. With a target image it
runs the inference core and samples z from the posterior (training and
reconstruction); without one it samples z from the prior (imagination). The
training pass, prior sampling and posterior reconstruction all call it.

Shapes: B queries, H hidden channels, Z latent channels, R representation
channels, D viewpoint size, h = image_size / downsample.

The canvas is accumulated at hidden resolution and upsampled once at the end by a
transposed convolution: the paper upsamples every step's hidden state and sums,
which is the same function (the upsampling is linear) at L times the cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from world_model.config import GQNConfig

_LOGVAR_MIN, _LOGVAR_MAX = -10.0, 10.0


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell: all four gates from one convolution."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x (B, in, h, w)``, state ``(h, c)`` each ``(B, H, h, w)``."""
        hidden, cell = state
        gates = self.conv(torch.cat([x, hidden], dim=1))  # (B, 4H, h, w)
        i, f, o, g = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, cell


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over all but the batch dimension: ``(B,)``."""
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)
    return kl.flatten(1).sum(dim=1)


class ConvDRAW(nn.Module):
    """Generator and inference network of the GQN."""

    def __init__(self, config: GQNConfig) -> None:
        super().__init__()
        self.config = config
        hid, z, r, d, k = (
            config.hidden_channels,
            config.z_channels,
            config.r_channels,
            config.viewpoint_dim,
            config.core_kernel_size,
        )
        cores = 1 if config.share_core else config.num_layers
        self.generator_cores = nn.ModuleList(ConvLSTMCell(z + r + d, hid, k) for _ in range(cores))
        self.inference_cores = nn.ModuleList(ConvLSTMCell(hid + hid + r + d, hid, k) for _ in range(cores))
        self.prior = nn.Conv2d(hid, 2 * z, k, padding=k // 2)
        self.posterior = nn.Conv2d(hid, 2 * z, k, padding=k // 2)
        ds = config.downsample
        self.target_down = nn.Conv2d(3, hid, ds, stride=ds)  # query image -> hidden resolution
        self.canvas_up = nn.ConvTranspose2d(hid, hid, ds, stride=ds)
        self.to_image = nn.Conv2d(hid, 3, 1)

    def _core(self, cores: nn.ModuleList, step: int) -> nn.Module:
        return cores[0] if len(cores) == 1 else cores[step]

    def run(
        self,
        r: torch.Tensor,
        viewpoints: torch.Tensor,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sample: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The L-step ConvDRAW loop.

        Args:
            r: Scene representation ``(B, R, 1, 1)`` or ``(B, R, h, w)``.
            viewpoints: Query viewpoints ``(B, D)``.
            target: Query images ``(B, 3, H, W)`` in [0, 1]: posterior pass. ``None``: prior pass.
            generator: Source of the latent noise (seeded sampling).
            sample: Draw z (True) or take the distribution's mean (False).

        Returns:
            ``(mean image (B, 3, H, W) in [0, 1], KL (B,))``; the KL is zero for a prior pass.
        """
        cfg = self.config
        b, s = viewpoints.shape[0], cfg.hidden_size
        v = viewpoints[:, :, None, None].expand(-1, -1, s, s)  # (B, D, h, w)
        if r.shape[-1] == 1:
            r = r.expand(-1, -1, s, s)  # (B, R, h, w)
        cond = torch.cat([v, r], dim=1)  # (B, D + R, h, w)
        zeros = viewpoints.new_zeros(b, cfg.hidden_channels, s, s)
        h_gen, c_gen, h_inf, c_inf, canvas = zeros, zeros, zeros, zeros, zeros
        x = self.target_down(target) if target is not None else None  # (B, H, h, w)
        kl = viewpoints.new_zeros(b)
        for step in range(cfg.num_layers):
            mu_p, logvar_p = self.prior(h_gen).clamp(_LOGVAR_MIN, _LOGVAR_MAX).chunk(2, dim=1)  # (B, Z, h, w) each
            if x is not None:
                h_inf, c_inf = self._core(self.inference_cores, step)(
                    torch.cat([x, h_gen, cond], dim=1), (h_inf, c_inf)
                )
                mu_q, logvar_q = self.posterior(h_inf).clamp(_LOGVAR_MIN, _LOGVAR_MAX).chunk(2, dim=1)
                kl = kl + gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
                mu, logvar = mu_q, logvar_q
            else:
                mu, logvar = mu_p, logvar_p
            if sample:
                noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
                z = mu + (0.5 * logvar).exp() * noise
            else:
                z = mu
            h_gen, c_gen = self._core(self.generator_cores, step)(torch.cat([z, cond], dim=1), (h_gen, c_gen))
            canvas = canvas + h_gen  # (B, H, h, w)
        mean = torch.sigmoid(self.to_image(F.relu(self.canvas_up(canvas))))  # (B, 3, H, W)
        return mean, kl
