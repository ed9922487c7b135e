"""The ConvDRAW generation network (Eslami et al. 2018; Gregor et al. 2016).

The L-step loop lives in one place, :meth:`ConvDRAW.run`. With a target image it
runs the inference core and samples z from the posterior (training and
reconstruction); without one it samples z from the prior (imagination). The
training pass, prior sampling and posterior reconstruction all call it, and
``sample=False`` takes every z at its distribution's mean (a deterministic
prediction).

Shapes: B queries, H hidden channels, Z latent channels, R representation
channels, D viewpoint size, s = image_size / downsample (the hidden resolution).

Two exact rewrites make the loop cheap on a CPU without changing the function or
the parameters (a checkpoint of the plain formulation loads unchanged):

* A ConvLSTM's gates are one convolution over ``cat([inputs, h])``. Convolution
  is linear in its input channels, so the part of the gates coming from inputs
  that do not change over the L steps (the viewpoint v, the representation r and,
  for the inference core, the query image) is computed **once per pass**, and
  each step convolves only the changing inputs (z or h_gen, and h).
* The viewpoint and a pooled r are 1x1 vectors broadcast over the s x s grid; the
  convolution of a broadcast vector is computed exactly (zero padding included)
  as a small matrix product with a mask of the kernel taps that fall inside the
  grid (:func:`broadcast_conv`), instead of a k x k convolution over R channels.

The canvas is accumulated at hidden resolution and upsampled once at the end by a
transposed convolution (kernel = stride = downsample).

**The nearest context view** (``config.view_channels > 0``, our addition; off in
the paper's configuration). A pooled r is one vector for the whole scene, and
the generator renders from it a smooth image: a query that nearly repeats a
context frame comes out blurrier than that frame itself. With this option the
generator also receives the context view whose viewpoint is nearest the query's
(chosen by the model, :meth:`world_model.GQN.nearest_view`), embedded per
``downsample``-pixel patch into a ``(view_channels, s, s)`` map, and the offset
``v_query - v_view``, as two more fixed inputs of its core. It is a hard,
pose-keyed form of attention over the context (Rosenbaum et al. 2018 attend
softly over all views); the scene representation r, which the environment's
observation exposes, is still the plain sum over views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from world_model.config import ModelConfig
from world_model.representation import patchify

_LOGVAR_MIN, _LOGVAR_MAX = -10.0, 10.0


def tap_mask(size: int, kernel_size: int) -> torch.Tensor:
    """Which kernel taps of a same-padded convolution read inside an ``size x size`` grid.

    Returns:
        ``(size, size, k, k)`` float mask: ``M[y, x, i, j] = 1`` iff input pixel
        ``(y + i - k//2, x + j - k//2)`` lies in the grid.
    """
    pad = kernel_size // 2
    pos = torch.arange(size)[:, None] + torch.arange(kernel_size)[None, :] - pad  # (s, k)
    inside = ((pos >= 0) & (pos < size)).float()  # (s, k)
    return inside[:, None, :, None] * inside[None, :, None, :]  # (s, s, k, k)


def broadcast_conv(vector: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Same-padded, bias-free convolution of a vector broadcast over a grid, computed exactly.

    Equals ``F.conv2d(vector[:, :, None, None].expand(-1, -1, s, s), weight, padding=k // 2)``
    at a cost independent of the kernel's spatial work.

    Args:
        vector: ``(B, C)``.
        weight: ``(O, C, k, k)``.
        mask: ``tap_mask(s, k)``, ``(s, s, k, k)``.

    Returns:
        ``(B, O, s, s)``.
    """
    per_tap = torch.einsum("bc,ocij->boij", vector, weight)  # (B, O, k, k)
    return torch.einsum("boij,yxij->boyx", per_tap, mask)  # (B, O, s, s)


class ChannelLayout:
    """The named inputs of a core, in the order of its convolution's input channels.

    Built once from the config; the call sites place tensors by name, never by channel offset.

    Args:
        groups: ``(name, channels)`` pairs in weight order.
    """

    def __init__(self, *groups: tuple[str, int]) -> None:
        self.slices: dict[str, slice] = {}  # name -> its input channels
        start = 0
        for name, channels in groups:
            self.slices[name] = slice(start, start + channels)
            start += channels
        self.channels = start

    def parts(self, **tensors: torch.Tensor) -> list[tuple[slice, torch.Tensor]]:
        """The given inputs as ``(channels, tensor)`` parts in layout order (:meth:`ConvLSTMCell.fixed_gates`).

        A tensor is a vector ``(B, C)`` or a map ``(B, C, s, s)``; vectors next to each other in
        the layout are joined into one part (one broadcast convolution instead of several).
        """
        unknown = set(tensors) - set(self.slices)
        if unknown:
            raise ValueError(f"Unknown inputs {sorted(unknown)}; this core takes {list(self.slices)}")
        parts: list[tuple[slice, torch.Tensor]] = []
        for name, where in self.slices.items():
            if name not in tensors:
                continue
            tensor = tensors[name]
            if tensor.shape[1] != where.stop - where.start:
                raise ValueError(f"Input {name!r} has {tensor.shape[1]} channels, expected {where.stop - where.start}")
            if parts and tensor.dim() == 2 and parts[-1][1].dim() == 2 and parts[-1][0].stop == where.start:
                before, vector = parts.pop()
                parts.append((slice(before.start, where.stop), torch.cat([vector, tensor], dim=1)))  # (B, C1 + C2)
            else:
                parts.append((where, tensor))
        return parts


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell: all four gates from one convolution over ``cat([x, h])``.

    :meth:`forward` is the plain formulation. :meth:`fixed_gates`,
    :meth:`step_weight` and :meth:`step` compute the same thing with the inputs
    that are constant over the L steps convolved once (see the module docstring).

    Args:
        in_channels: Channels of ``x`` (all inputs but the cell's own hidden state).
        hidden_channels: Channels H of the hidden and cell states.
        kernel_size: Odd kernel size (same padding).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)

    @staticmethod
    def _update(gates: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, o, g = gates.chunk(4, dim=1)  # (B, H, s, s) each
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x (B, in, s, s)``, state ``(h, c)`` each ``(B, H, s, s)``."""
        hidden, cell = state
        return self._update(self.conv(torch.cat([x, hidden], dim=1)), cell)  # gates (B, 4H, s, s)

    def fixed_gates(self, parts: Sequence[tuple[slice, torch.Tensor]], mask: torch.Tensor) -> torch.Tensor:
        """Gate pre-activations from inputs that stay fixed over the L steps, plus the bias.

        Args:
            parts: ``(input channels, tensor)`` pairs (:meth:`ChannelLayout.parts`); a tensor is a
                vector ``(B, C)`` (broadcast over the grid) or a map ``(B, C, s, s)``.
            mask: ``tap_mask(s, k)``.

        Returns:
            ``(B, 4H, s, s)``.
        """
        size = mask.shape[0]
        batch = parts[0][1].shape[0]
        out = self.conv.bias[None, :, None, None].expand(batch, -1, size, size)  # (B, 4H, s, s)
        for channels, tensor in parts:
            weight = self.conv.weight[:, channels]  # (4H, C, k, k)
            if tensor.dim() == 2:
                out = out + broadcast_conv(tensor, weight, mask)
            else:
                out = out + F.conv2d(tensor, weight, padding=self.conv.padding)
        return out

    def step_weight(self, inputs: Sequence[slice]) -> torch.Tensor:
        """Kernel for the per-step inputs: the given input channel groups, then h.

        Returns:
            ``(4H, sum(channels) + H, k, k)``.
        """
        w = self.conv.weight
        return torch.cat([w[:, channels] for channels in inputs] + [w[:, self.in_channels :]], dim=1)

    def step(
        self,
        fixed: torch.Tensor,
        dynamic: torch.Tensor,
        weight: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from precomputed fixed gates and the per-step inputs ``dynamic (B, C, s, s)``."""
        hidden, cell = state
        gates = fixed + F.conv2d(torch.cat([dynamic, hidden], dim=1), weight, padding=self.conv.padding)
        return self._update(gates, cell)  # gates (B, 4H, s, s)


def coverage_inputs(grid: torch.Tensor, excess: torch.Tensor) -> dict[str, torch.Tensor]:
    """A ``coverage`` map head's summed floor map as the generator reads it.

    Args:
        grid: ``(B, M + 1, s, s)``: the features summed over views, then the footprints
            summed (how many views looked at each cell), both scaled down alike by
            :func:`world_model.model.scale_to_context` for more than ``context_max`` views.
        excess: ``(B, 1)``, :func:`world_model.model.context_excess`, ``log`` of how far they were scaled.

    Returns:
        ``map``: each cell's mean over the views that looked at it (the sum where less than one
        view's worth did, so that cells at a footprint's edge fade out rather than blow up), and
        ``coverage``: ``log(1 + views that looked at the cell)``, unscaled. Neither shrinks as
        more views are summed, so the generator can grow surer of a place the more it was seen.
    """
    unscale = excess.exp()[:, :, None, None]  # (B, 1, 1, 1): K / context_max past it, else 1
    features, views = grid[:, :-1] * unscale, grid[:, -1:] * unscale
    return {"map": features / views.clamp(min=1.0), "coverage": torch.log1p(views.clamp(min=0.0))}


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over all but the batch dimension: ``(B,)``."""
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)
    return kl.flatten(1).sum(dim=1)


class ConvDRAW(nn.Module):
    """Generator and inference network of the GQN.

    Channel layout of the cores' inputs (the order of their convolution weights), the
    :class:`ChannelLayout` s ``generator_inputs`` and ``inference_inputs``: generator
    ``[z (Z), v (D), r (R)]`` (then ``[view (V), view_offset (D)]``, the nearest view's
    map and pose offset, when ``config.view_channels`` = V > 0), inference
    ``[x (I), h_gen (H), v (D), r (R)]``; after ``r`` both take ``map`` (M) with a floor-map
    head, and ``coverage`` (1) after it with a ``coverage`` one (:func:`coverage_inputs`);
    both end with ``count`` (1) when ``config.count_input`` is set. Each is followed by the core's own hidden state
    (H channels for the generator, I = ``config.inference_channels`` for the inference core).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        hid, z, r, d, k = (
            config.hidden_channels,
            config.z_channels,
            config.r_channels + (0 if config.grid_map else config.map_channels),  # r, a vector
            config.viewpoint_dim,
            config.core_kernel_size,
        )
        cores = 1 if config.share_core else config.num_layers
        view = config.view_channels
        self.view_embed = nn.Linear(3 * config.downsample**2, view) if view else None  # one patch -> V
        view_inputs = (("view", view), ("view_offset", d)) if view else ()
        # A grid map head's sum over views: a floor map (M, s, s), an input of its own; a coverage
        # map head's per-cell mean and log(1 + views that looked at the cell), a channel more.
        grid = (("map", config.map_channels),) if config.grid_map else ()
        if config.map_layout == "coverage" and config.map_channels:
            grid += (("coverage", 1),)
        count = (("count", 1),) if config.count_input else ()  # log of how far r was scaled down
        self.generator_inputs = ChannelLayout(("z", z), ("v", d), ("r", r), *grid, *view_inputs, *count)
        gen_in = self.generator_inputs.channels
        self.generator_cores = nn.ModuleList(ConvLSTMCell(gen_in, hid, k) for _ in range(cores))
        inf = config.inference_channels
        self.inference_inputs = ChannelLayout(("x", inf), ("h_gen", hid), ("v", d), ("r", r), *grid, *count)
        inf_in = self.inference_inputs.channels
        self.inference_cores = nn.ModuleList(ConvLSTMCell(inf_in, inf, k) for _ in range(cores))
        self.prior = nn.Conv2d(hid, 2 * z, k, padding=k // 2)
        self.posterior = nn.Conv2d(inf, 2 * z, k, padding=k // 2)
        ds = config.downsample
        self.target_down = nn.Conv2d(3, inf, ds, stride=ds)  # query image -> hidden resolution
        self.canvas_up = nn.ConvTranspose2d(hid, hid, ds, stride=ds)
        self.to_image = nn.Conv2d(hid, 3, 1)
        self.register_buffer("tap_mask", tap_mask(config.hidden_size, k), persistent=False)

    def _view_inputs(
        self, view: tuple[torch.Tensor, torch.Tensor] | None, viewpoints: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The generator's fixed ``view`` and ``view_offset`` inputs (none when the option is off)."""
        if self.view_embed is None:
            return {}
        if view is None:
            raise ValueError("This model renders from r and the nearest context view: pass view=(image, viewpoint)")
        images, view_viewpoints = view  # (B, 3, H, W), (B, D)
        embedded = self.view_embed(patchify(images, self.config.downsample)).permute(0, 3, 1, 2)  # (B, V, s, s)
        return {"view": embedded, "view_offset": viewpoints - view_viewpoints}  # offset (B, D)

    def run(
        self,
        r: torch.Tensor,
        viewpoints: torch.Tensor,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sample: bool = True,
        view: tuple[torch.Tensor, torch.Tensor] | None = None,
        count: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The L-step ConvDRAW loop.

        Args:
            r: Scene representation ``(B, R, 1, 1)`` or ``(B, R, s, s)``.
            viewpoints: Query viewpoints ``(B, D)``.
            target: Query images ``(B, 3, H, W)`` in [0, 1]: posterior pass. ``None``: prior pass.
            generator: Source of the latent noise (seeded sampling).
            sample: Draw z (True) or take the distribution's mean (False).
            view: The context view nearest each query, ``(images (B, 3, H, W), viewpoints (B, D))``;
                required when ``config.view_channels > 0``, ignored otherwise.
            count: ``(B, 1)``, :func:`world_model.model.context_excess` of r's views; required
                when ``config.count_input`` is set, ignored otherwise.

        Returns:
            ``(mean image (B, 3, H, W) in [0, 1], KL (B,))``; the KL is zero for a prior pass.
        """
        cfg = self.config
        b, s, hid = viewpoints.shape[0], cfg.hidden_size, cfg.hidden_channels
        inf = cfg.inference_channels
        mask = self.tap_mask
        # Everything that does not change over the L steps, once per pass (per core if unshared).
        r = r.flatten(1) if r.shape[-1] == 1 else r  # pooled r: a vector (B, R), joined with v; else (B, R, s, s)
        shared = {}  # inputs both cores take besides v and r: a grid map head's floor map, the count
        if (cfg.count_input or "coverage" in self.generator_inputs.slices) and count is None:
            raise ValueError("This model needs count=(B, 1), how far r was scaled down (context_excess)")
        if "map" in self.generator_inputs.slices:
            r, grid = r[:, : cfg.r_channels], r[:, cfg.r_channels :]
            grid = grid.reshape(b, *cfg.map_shape)  # (B, M, s, s), or (B, M + 1, s, s) with the footprints
            if "coverage" in self.generator_inputs.slices:
                shared.update(coverage_inputs(grid, count.to(viewpoints.dtype).reshape(b, 1)))
            else:
                shared["map"] = grid
        if cfg.count_input:
            shared["count"] = count.to(viewpoints.dtype).reshape(b, 1)  # a vector input, like v
        gen_inputs = self.generator_inputs
        gen_parts = gen_inputs.parts(v=viewpoints, r=r, **shared, **self._view_inputs(view, viewpoints))
        gen_fixed = [c.fixed_gates(gen_parts, mask) for c in self.generator_cores]
        gen_weight = [c.step_weight([gen_inputs.slices["z"]]) for c in self.generator_cores]  # z, then h_gen
        if target is not None:
            x = self.target_down(target)  # (B, I, s, s)
            inf_inputs = self.inference_inputs
            inf_parts = inf_inputs.parts(x=x, v=viewpoints, r=r, **shared)
            inf_fixed = [c.fixed_gates(inf_parts, mask) for c in self.inference_cores]
            inf_weight = [c.step_weight([inf_inputs.slices["h_gen"]]) for c in self.inference_cores]  # then h_inf
        zeros = viewpoints.new_zeros(b, hid, s, s)
        h_gen, c_gen, canvas = zeros, zeros, zeros
        h_inf = c_inf = viewpoints.new_zeros(b, inf, s, s)
        kl = viewpoints.new_zeros(b)
        for step in range(cfg.num_layers):
            core = step if len(self.generator_cores) > 1 else 0
            mu_p, logvar_p = self.prior(h_gen).clamp(_LOGVAR_MIN, _LOGVAR_MAX).chunk(2, dim=1)  # (B, Z, s, s) each
            if target is not None:
                h_inf, c_inf = self.inference_cores[core].step(inf_fixed[core], h_gen, inf_weight[core], (h_inf, c_inf))
                mu_q, logvar_q = self.posterior(h_inf).clamp(_LOGVAR_MIN, _LOGVAR_MAX).chunk(2, dim=1)
                kl = kl + gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
                mu, logvar = mu_q, logvar_q
            else:
                mu, logvar = mu_p, logvar_p
            if sample:
                noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
                z = mu + (0.5 * logvar).exp() * noise  # (B, Z, s, s)
            else:
                z = mu
            h_gen, c_gen = self.generator_cores[core].step(gen_fixed[core], z, gen_weight[core], (h_gen, c_gen))
            canvas = canvas + h_gen  # (B, H, s, s)
        mean = torch.sigmoid(self.to_image(F.relu(self.canvas_up(canvas))))  # (B, 3, H, W)
        return mean, kl
