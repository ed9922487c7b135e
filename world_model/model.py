"""The Generative Query Network: representation network + ConvDRAW generator.

Conventions: images are uint8 ``(..., H, W, 3)`` at the boundary (numpy or
torch) and float ``(..., 3, H, W)`` in [0, 1] inside; viewpoints are float32
``(..., D)``. Every public method validates its inputs through
:func:`images_to_tensor` / :func:`viewpoints_to_tensor`, which raise
``ValueError`` naming what they received.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from world_model.config import GQNConfig
from world_model.generator import ConvDRAW
from world_model.representation import make_representation

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def images_to_tensor(images: Any, image_size: int, device: torch.device | str, lead: int) -> torch.Tensor:
    """Validate images and return floats ``(*lead_dims, 3, S, S)`` in [0, 1] on ``device``.

    Accepts uint8 ``(*lead, S, S, 3)`` (numpy or torch), or float tensors already
    in model layout ``(*lead, 3, S, S)``.

    Args:
        images: The images.
        image_size: The model's image side S.
        device: Target device.
        lead: Number of leading (batch) dimensions expected.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"Images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.dim() != lead + 3:
        raise ValueError(f"Expected images with {lead + 3} dims, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if tuple(images.shape[-3:]) != (image_size, image_size, 3):
            raise ValueError(f"Expected uint8 images (..., {image_size}, {image_size}, 3), got {tuple(images.shape)}")
        return images.to(device).movedim(-1, -3).float().div_(255.0)  # (..., 3, S, S)
    if images.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        if tuple(images.shape[-3:]) != (3, image_size, image_size):
            raise ValueError(f"Expected float images (..., 3, {image_size}, {image_size}), got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("Images contain NaN or infinite values")
        low, high = (float(images.min()), float(images.max())) if images.numel() else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise ValueError(f"Float images must lie in [0, 1], got values in [{low:g}, {high:g}]")
        return images.to(device=device, dtype=torch.float32)
    raise ValueError(f"Images must be uint8 (HWC) or float (CHW), got dtype {images.dtype}")


def viewpoints_to_tensor(viewpoints: Any, dim: int, device: torch.device | str, lead: int) -> torch.Tensor:
    """Validate viewpoints and return float32 ``(*lead_dims, dim)`` on ``device``."""
    try:
        v = torch.as_tensor(np.asarray(viewpoints) if not isinstance(viewpoints, torch.Tensor) else viewpoints)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"Viewpoints must be a numeric array of shape (..., {dim}): {err}") from None
    if not (v.is_floating_point() or v.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"Viewpoints must be numeric, got dtype {v.dtype}")
    if v.dim() != lead + 1 or v.shape[-1] != dim:
        raise ValueError(f"Expected viewpoints of shape (..., {dim}) with {lead + 1} dims, got {tuple(v.shape)}")
    v = v.to(device=device, dtype=torch.float32)
    if not torch.isfinite(v).all():
        raise ValueError(f"Viewpoints contain NaN or infinite values: {v.flatten()[:14].tolist()}")
    return v


def forward_batch(
    module: nn.Module, batch: dict[str, Any], sigma: float, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """The training pass of ``module`` (a :class:`GQN` or a wrapper such as DDP) on a sampler's batch dict."""
    return module(
        batch["context_images"],
        batch["context_viewpoints"],
        batch["query_images"],
        batch["query_viewpoints"],
        sigma=sigma,
        generator=generator,
        drop_view=batch.get("drop_view"),
    )


def scale_to_context(r_sum: Any, frames: int, context_max: int) -> Any:
    """A sum of ``frames`` per-view encodings scaled to ``min(frames, context_max)`` views' worth.

    The GQN is trained on sums of at most ``context_max`` views; a longer episode's sum
    is scaled down to that many views' worth before it renders (docs/results.md, long
    episodes). Works on numpy arrays and torch tensors alike.
    """
    frames = max(int(frames), 1)
    return r_sum * (min(frames, context_max) / frames)


def context_excess(frames: Any, context_max: int) -> np.ndarray:
    """What a ``count_input`` model is told of a context of ``frames`` views.

    ``log(frames / context_max)`` where the sum was scaled down (:func:`scale_to_context`),
    else 0. ``frames`` is one count or one per query; returns float32 of its shape.

    Raises:
        ValueError: If a count is not a finite number >= 1.
    """
    counts = np.asarray(frames, dtype=np.float64)
    if not np.isfinite(counts).all() or (counts < 1).any():
        raise ValueError(f"frames must be view counts >= 1, got {frames!r}")
    return np.log(np.maximum(counts, context_max) / context_max).astype(np.float32)


def _gather_nearest(
    images: torch.Tensor, viewpoints: torch.Tensor, query_viewpoints: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query, the context view whose viewpoint is nearest (Euclidean, like the evaluation's baseline).

    Args:
        images: ``(B, K, 3, S, S)``; B may be 1 (one scene's context for all queries).
        viewpoints: ``(B, K, D)``.
        query_viewpoints: ``(Q, D)``, Q = B unless B is 1.

    Returns:
        ``(images (Q, 3, S, S), viewpoints (Q, D))``.
    """
    q = query_viewpoints.shape[0]
    if images.shape[0] == 1:  # one scene's context for all queries
        images, viewpoints = images.expand(q, *images.shape[1:]), viewpoints.expand(q, *viewpoints.shape[1:])
    if images.shape[0] != q:
        raise ValueError(f"{images.shape[0]} contexts but {q} query viewpoints")
    nearest = (viewpoints - query_viewpoints[:, None]).square().sum(dim=-1).argmin(dim=1)  # (Q,)
    rows = torch.arange(q, device=images.device)
    return images[rows, nearest], viewpoints[rows, nearest]


def drop_views(
    view: tuple[torch.Tensor, torch.Tensor], query_viewpoints: torch.Tensor, drop: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest-view input with the views of the queries marked in ``drop`` ``(Q,)`` taken away.

    A dropped view is a black image at the query's own viewpoint (offset 0), which no real
    view is, so the generator can tell that it has r alone for that query.
    """
    images, viewpoints = view
    keep = ~torch.as_tensor(np.asarray(drop, dtype=bool), device=images.device)
    if keep.shape != (images.shape[0],):
        raise ValueError(f"drop_view must be one flag per query ({images.shape[0]}), got shape {tuple(keep.shape)}")
    return images * keep[:, None, None, None], torch.where(keep[:, None], viewpoints, query_viewpoints)


class GQN(nn.Module):
    """A Generative Query Network built from a :class:`GQNConfig`."""

    def __init__(self, config: GQNConfig) -> None:
        super().__init__()
        self.config = config
        # Initialise from config.seed without touching the global RNG's state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.representation = make_representation(config.model)
            self.generator = ConvDRAW(config.model)

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return next(self.parameters()).device

    def encode(self, images: Any, viewpoints: Any) -> torch.Tensor:
        """Per-view representations: images ``(N, S, S, 3)`` uint8 (or ``(N, 3, S, S)`` float), viewpoints ``(N, D)``.

        Returns:
            ``(N, *representation_shape)``.
        """
        x = images_to_tensor(images, self.config.image_size, self.device, lead=1)
        v = viewpoints_to_tensor(viewpoints, self.config.viewpoint_dim, self.device, lead=1)
        if x.shape[0] != v.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {v.shape[0]} viewpoints")
        return self.representation(x, v)

    def _context(self, context_images: Any, context_viewpoints: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated context: images ``(B, K, 3, S, S)`` and viewpoints ``(B, K, D)``, K >= 1."""
        x = images_to_tensor(context_images, self.config.image_size, self.device, lead=2)
        v = viewpoints_to_tensor(context_viewpoints, self.config.viewpoint_dim, self.device, lead=2)
        b, k = x.shape[:2]
        if k == 0:
            raise ValueError("At least one context view is needed (got K = 0)")
        if tuple(v.shape[:2]) != (b, k):
            raise ValueError(
                f"Context images {tuple(x.shape[:2])} and viewpoints {tuple(v.shape[:2])} disagree on (B, K)"
            )
        return x, v

    def _represent(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]
        r = self.representation(x.flatten(0, 1), v.flatten(0, 1))  # (B*K, R, h, w)
        return r.view(b, k, *r.shape[1:]).sum(dim=1)  # (B, R, h, w)

    def scene_representation(self, context_images: Any, context_viewpoints: Any) -> torch.Tensor:
        """Scene representation r, the sum over K context views: ``(B, K, ...)`` -> ``(B, *r_shape)``.

        The plain sum: to render from more than ``config.context_max`` views, scale it with
        :func:`scale_to_context` and pass ``frames=K`` to :meth:`render`, as the env wrapper does.
        """
        return self._represent(*self._context(context_images, context_viewpoints))

    def nearest_view(
        self, context_images: Any, context_viewpoints: Any, query_viewpoints: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The context view nearest each query: what :meth:`render` hands a model with ``view_channels > 0``.

        Args:
            context_images: ``(B, K, S, S, 3)`` uint8 or ``(B, K, 3, S, S)`` float; B may be 1
                (one scene's context for all queries).
            context_viewpoints: ``(B, K, D)``.
            query_viewpoints: ``(B, D)``.

        Returns:
            ``(images (B, 3, S, S) float in [0, 1], viewpoints (B, D))``.
        """
        x, v = self._context(context_images, context_viewpoints)
        qv = viewpoints_to_tensor(query_viewpoints, self.config.viewpoint_dim, self.device, lead=1)
        return _gather_nearest(x, v, qv)

    def _view_input(
        self, context: Any, qv: torch.Tensor, drop_view: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The generator's input besides r from a ``context`` pair: :meth:`_nearest_input` after validation."""
        if not self.config.view_channels:
            return self._nearest_input(None, None, qv, drop_view)
        if context is None:
            raise ValueError(
                "This model (view_channels > 0) renders from r and the context view nearest each query: "
                "pass context=(context_images, context_viewpoints), the frames r was built from"
            )
        try:
            images, viewpoints = context
        except (TypeError, ValueError):
            raise ValueError(f"context must be a pair (images, viewpoints), got {type(context).__name__}") from None
        return self._nearest_input(*self._context(images, viewpoints), qv, drop_view)

    def _nearest_input(
        self, x: torch.Tensor | None, v: torch.Tensor | None, qv: torch.Tensor, drop_view: Any
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The context view nearest each query, or None for a model without that input.

        ``drop_view`` ``(Q,)`` bool: queries that get no view (:func:`drop_views`); None: all get theirs.
        """
        if not self.config.view_channels:
            if drop_view is not None:
                raise ValueError("drop_view is for a model with a nearest-view input (view_channels > 0)")
            return None
        view = _gather_nearest(x, v, qv)
        return view if drop_view is None else drop_views(view, qv, drop_view)

    def _count_input(self, frames: Any, batch: int) -> torch.Tensor | None:
        """:func:`context_excess` of r's ``frames`` views as ``(B, 1)``, for a model that reads it (else None).

        A ``count_input`` model reads it as an input; a ``coverage`` map head unscales its footprints by it.
        """
        if frames is None:
            frames = 1  # r of at most context_max views: the input reads 0
        excess = context_excess(frames, self.config.context_max).reshape(-1)
        if excess.size not in (1, batch):
            raise ValueError(f"frames must be one count or one per query ({batch}), got {excess.size}")
        if not (self.config.count_input or self.config.map_layout == "coverage"):
            return None  # a coverage map head unscales its footprints by it (generator.coverage_inputs)
        return torch.as_tensor(excess, device=self.device).expand(batch)[:, None]

    def _check_r(self, r: torch.Tensor, batch: int) -> torch.Tensor:
        shape = (batch, *self.config.representation_shape)
        if tuple(r.shape) != shape:
            raise ValueError(f"Expected a representation of shape {shape}, got {tuple(r.shape)}")
        if not torch.isfinite(r).all():
            raise ValueError("The representation r contains NaN or infinite values")
        return r.to(self.device)

    def forward(
        self,
        context_images: Any,
        context_viewpoints: Any,
        query_images: Any,
        query_viewpoints: Any,
        sigma: float,
        generator: torch.Generator | None = None,
        drop_view: Any = None,
    ) -> dict[str, torch.Tensor]:
        """The training pass: negative ELBO of the query images given the context.

        ``drop_view`` (``(B,)`` bool, a model with ``view_channels`` only): queries whose
        nearest-view input is taken away (:func:`drop_views`), so that they are rendered from r
        alone (``TrainConfig.view_dropout``).

        Returns:
            ``loss`` (negative ELBO per query, averaged over the batch; nats),
            ``nll`` and ``kl`` (batch means), ``mse`` (per pixel), and ``mean``
            (the posterior reconstruction ``(B, 3, S, S)``).
        """
        if not (isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite positive number, got {sigma!r}")
        x, v = self._context(context_images, context_viewpoints)
        frames = x.shape[1]
        r = scale_to_context(self._represent(x, v), frames, self.config.context_max)  # as the env wrapper renders
        target = images_to_tensor(query_images, self.config.image_size, self.device, lead=1)
        qv = viewpoints_to_tensor(query_viewpoints, self.config.viewpoint_dim, self.device, lead=1)
        if target.shape[0] != r.shape[0] or qv.shape[0] != r.shape[0]:
            raise ValueError(
                f"Batch sizes differ: context {r.shape[0]}, queries {target.shape[0]}, viewpoints {qv.shape[0]}"
            )
        view = self._nearest_input(x, v, qv, drop_view)
        count = self._count_input(frames, qv.shape[0])
        mean, kl = self.generator.run(r, qv, target=target, generator=generator, view=view, count=count)
        # Gaussian pixel likelihood, summed over pixels: (B,)
        nll = (0.5 * ((target - mean) / sigma) ** 2 + math.log(sigma) + HALF_LOG_2PI).flatten(1).sum(dim=1)
        return {
            "loss": (nll + kl).mean(),
            "nll": nll.mean(),
            "kl": kl.mean(),
            "mse": ((target - mean) ** 2).mean(),
            "mean": mean,
        }

    def render(
        self,
        r: torch.Tensor,
        query_viewpoints: Any,
        context: Any = None,
        generator: torch.Generator | None = None,
        sample: bool = False,
        frames: Any = None,
        drop_view: Any = None,
    ) -> torch.Tensor:
        """Imagine: render query viewpoints from r by the prior; ``(B, 3, S, S)`` in [0, 1].

        Args:
            r: Scene representation ``(B, *representation_shape)`` (:meth:`scene_representation`).
            query_viewpoints: ``(B, D)``.
            context: The frames r was built from, ``(images (B, K, S, S, 3) uint8 or (B, K, 3, S, S)
                float, viewpoints (B, K, D))``, B may be 1 (one scene's context for all queries).
                A model with ``config.view_channels > 0`` renders each query from r and the
                context view nearest it (:meth:`nearest_view`), and needs it; the others ignore it.
            generator: Source of the latent noise when sampling.
            sample: Draw z from the prior (True) or take its mean at every step (False, default:
                the deterministic prediction the evaluation scores).
            frames: How many views r was summed over before :func:`scale_to_context`: one count,
                or one per query. A model with ``config.count_input`` or a ``coverage`` map head
                reads it (``None``: at most
                ``context_max``, as :meth:`scene_representation` of a short context gives).
            drop_view: ``(B,)`` bool: render these queries from r alone, without their nearest
                view (:func:`drop_views`). Only a model trained so (``TrainConfig.view_dropout``)
                has learned to; for any other it is an input it never saw.
        """
        qv = viewpoints_to_tensor(query_viewpoints, self.config.viewpoint_dim, self.device, lead=1)
        r = self._check_r(r, qv.shape[0])
        view = self._view_input(context, qv, drop_view)
        count = self._count_input(frames, qv.shape[0])
        mean, _ = self.generator.run(r, qv, generator=generator, sample=sample, view=view, count=count)
        return mean

    def reconstruct(
        self,
        r: torch.Tensor,
        query_viewpoints: Any,
        query_images: Any,
        context: Any = None,
        generator: torch.Generator | None = None,
        frames: Any = None,
    ) -> torch.Tensor:
        """Posterior reconstruction of the queries, ``(B, 3, S, S)`` in [0, 1].

        ``context`` and ``frames`` as in :meth:`render`.
        """
        qv = viewpoints_to_tensor(query_viewpoints, self.config.viewpoint_dim, self.device, lead=1)
        target = images_to_tensor(query_images, self.config.image_size, self.device, lead=1)
        r = self._check_r(r, qv.shape[0])
        view = self._view_input(context, qv)
        count = self._count_input(frames, qv.shape[0])
        mean, _ = self.generator.run(r, qv, target=target, generator=generator, view=view, count=count)
        return mean
