"""Training: annealing schedules, the online trainer, and a background worker.

:class:`Trainer` does one Adam step per :meth:`Trainer.step` from any *sampler*
with ``sample(batch_size, rng) -> dict`` of numpy arrays ``context_images
(B, K, H, W, 3)`` uint8, ``context_viewpoints (B, K, D)``, ``query_images
(B, H, W, 3)`` uint8 and ``query_viewpoints (B, D)`` (a
:class:`world_model.data.SceneBuffer`). A sampler whose ``sample`` also takes
``num_context`` is asked for K in ``[context_min, context_max]`` (drawn as
``context_sampling`` says, and from the frames ``context_selection`` says); otherwise
a batch with more than ``context_max`` views is cut to a random K in that range,
drawn the same way (a random subset of views per item; ``context_selection="window"``
needs a sampler that takes it). It owns every source of randomness it
uses (a numpy Generator for batches, a torch Generator for latents), and
:meth:`Trainer.save` / :meth:`Trainer.load` store them with the model, optimizer,
step and config, so a resumed run takes bit-identical next steps.

A step whose loss or gradient is not finite is skipped: weights and optimizer
state stay as they were, ``skipped_steps`` counts it, and the returned stats say so.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from world_model.checkpoint import CheckpointError, check_compatible, load_checkpoint, load_weights, save_checkpoint
from world_model.config import GQNConfig, TrainConfig
from world_model.data import draw_num_context
from world_model.model import GQN, forward_batch

#: Options of ``SceneBuffer.sample`` that the trainer passes from its config when they differ from their defaults.
_SAMPLER_OPTIONS = {
    name: TrainConfig.__dataclass_fields__[name].default for name in ("context_sampling", "context_selection")
}


def _accepts_keyword(sampler: Any, name: str) -> bool:
    """Whether ``sampler.sample`` takes the keyword ``name``."""
    try:
        params = inspect.signature(sampler.sample).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def linear_anneal(start: float, end: float, steps: int, t: int) -> float:
    """The paper's schedule: ``max(end + (start - end) * (1 - t / steps), end)`` (for start >= end)."""
    return max(end + (start - end) * (1.0 - t / steps), end)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1]."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


class _NoBar:
    """Stands in for tqdm when it is not installed and no bar is wanted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        """Do nothing."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Do nothing."""


class Trainer:
    """One-step-at-a-time GQN trainer.

    Args:
        model_or_config: A :class:`GQN` or a :class:`GQNConfig` to build one from.
        sampler: Source of batches: ``sample(batch_size, rng)`` (``num_context=`` optional).
        device: Where to train.
        log_dir: TensorBoard directory (optional; needs ``tensorboard``).
        image_every: Steps between TensorBoard image grids.
    """

    def __init__(
        self,
        model_or_config: GQN | GQNConfig,
        sampler: Any,
        device: str | torch.device = "cpu",
        log_dir: str | Path | None = None,
        image_every: int = 500,
    ) -> None:
        if isinstance(model_or_config, GQNConfig):
            model_or_config = GQN(model_or_config)  # initialised from config.seed
        self.model = model_or_config.to(device).train()
        self.train_module: torch.nn.Module = self.model  # what the training pass calls (DDP wraps the model)
        self.config: GQNConfig = self.model.config
        self.device = torch.device(device)
        self.sampler = sampler
        if self.config.freeze_representation:
            self.model.representation.requires_grad_(False)
            map_head = getattr(self.model.representation, "map_head", None)
            if map_head is not None:  # the generator's own channels of r: they still learn
                map_head.requires_grad_(True)
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad], lr=self.config.lr_start
        )
        self.np_rng = np.random.default_rng(self.config.seed)
        self.torch_rng = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.step_count = 0
        self.skipped_steps = 0
        self.extra: dict[str, Any] = {}
        self.lock = threading.Lock()  # held during a step; BackgroundTrainer reads weights under it
        # Held while sampling: an acting thread that feeds a non-thread-safe sampler takes it too.
        self.sampler_lock = threading.Lock()

        self.image_every = image_every
        self._writer = None
        if log_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # pragma: no cover - depends on the install
                raise ImportError("TensorBoard logging needs `pip install tensorboard`") from err
            self._writer = SummaryWriter(str(log_dir))

    @property
    def sampler(self) -> Any:
        """The source of batches (may be replaced between steps)."""
        return self._sampler

    @sampler.setter
    def sampler(self, sampler: Any) -> None:
        if not callable(getattr(sampler, "sample", None)):
            raise ValueError(f"A sampler needs a sample(batch_size, rng) method; got {type(sampler).__name__}")
        self._sampler = sampler
        self._pass_num_context = _accepts_keyword(sampler, "num_context")
        self._passes = {name: _accepts_keyword(sampler, name) for name in _SAMPLER_OPTIONS}

    # --------------------------------------------------------------- schedules
    @property
    def sigma(self) -> float:
        """Pixel standard deviation at the current step."""
        c = self.config
        return linear_anneal(c.sigma_start, c.sigma_end, c.sigma_anneal_steps, self.step_count)

    @property
    def lr(self) -> float:
        """Learning rate at the current step."""
        c = self.config
        return linear_anneal(c.lr_start, c.lr_end, c.lr_anneal_steps, self.step_count)

    # -------------------------------------------------------------------- step
    def sample_batch(self) -> dict[str, np.ndarray]:
        """Draw a batch from the sampler (under :attr:`sampler_lock`) with K in the config's range.

        Raises:
            ValueError: If the sampler returned fewer than ``context_min`` context views.
        """
        c = self.config
        with self.sampler_lock:
            if self._pass_num_context:
                extra = {"top_down_fraction": c.top_down_fraction} if c.top_down_fraction > 0 else {}
                for name, default in _SAMPLER_OPTIONS.items():
                    value = getattr(c, name)
                    if value != default:
                        if not self._passes[name]:
                            raise ValueError(
                                f"{name}={value!r} needs a sampler whose sample() takes {name} "
                                "(world_model.SceneBuffer does)"
                            )
                        extra[name] = value
                batch = self.sampler.sample(
                    c.batch_size, self.np_rng, num_context=(c.context_min, c.most_context), **extra
                )
            elif c.context_selection != _SAMPLER_OPTIONS["context_selection"]:
                raise ValueError(
                    f"context_selection={c.context_selection!r} needs a sampler whose sample() takes "
                    "num_context and context_selection (world_model.SceneBuffer does)"
                )
            else:
                batch = self.sampler.sample(c.batch_size, self.np_rng)
        batch = dict(batch)
        images, viewpoints = np.asarray(batch["context_images"]), np.asarray(batch["context_viewpoints"])
        if images.ndim != 5 or viewpoints.ndim != 3:
            raise ValueError(
                f"The sampler must return context_images (B, K, H, W, 3) and context_viewpoints (B, K, D), "
                f"got shapes {images.shape} and {viewpoints.shape}"
            )
        b, k = images.shape[:2]
        if k < c.context_min:
            raise ValueError(f"The sampler returned K = {k} context views; the config needs >= {c.context_min}")
        if k > c.most_context:
            keep = draw_num_context(self.np_rng, c.context_min, c.most_context, c.context_sampling)
            order = np.argsort(self.np_rng.random((b, k)), axis=1)[:, :keep]  # (B, keep) random views per item
            batch["context_images"] = np.take_along_axis(images, order[:, :, None, None, None], axis=1)
            batch["context_viewpoints"] = np.take_along_axis(viewpoints, order[:, :, None], axis=1)
        if c.view_dropout > 0:
            batch["drop_view"] = self.np_rng.random(b) < c.view_dropout  # (B,) queries rendered from r alone
        return batch

    def step(self) -> dict[str, float]:
        """One gradient step (or a skipped one, if the loss or gradient is not finite).

        Returns:
            Floats: ``loss`` (negative ELBO per query), ``nll``, ``kl``, ``mse``,
            ``psnr`` (of the posterior reconstruction), ``sigma``, ``lr``,
            ``queries_per_s``, ``skipped`` (1.0 if this step was skipped) and
            ``skipped_steps`` (the running count).

        Raises:
            ValueError: If the sampler's batch is malformed; nothing changes then.
        """
        c = self.config
        start = time.perf_counter()
        batch = self.sample_batch()
        with self.lock:
            sigma, lr = self.sigma, self.lr
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.model.train()
            out = self._forward(batch, sigma)
            self.optimizer.zero_grad(set_to_none=True)
            loss = out["loss"]
            finite = self._all_finite(bool(torch.isfinite(loss)))
            if finite:
                loss.backward()
                params = [p for p in self.model.parameters() if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip if c.grad_clip > 0 else float("inf"))
                finite = bool(torch.isfinite(norm))
            if finite:
                self.optimizer.step()
            else:
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
            self.step_count += 1
        elapsed = time.perf_counter() - start
        mse = float(out["mse"].detach())
        stats = {
            "loss": float(loss.detach()),
            "nll": float(out["nll"].detach()),
            "kl": float(out["kl"].detach()),
            "mse": mse,
            "psnr": psnr_from_mse(mse) if math.isfinite(mse) else float("nan"),
            "sigma": sigma,
            "lr": lr,
            "queries_per_s": c.batch_size / elapsed,
            "skipped": float(not finite),
            "skipped_steps": float(self.skipped_steps),
        }
        if self._writer is not None:
            self._log(stats, batch, out["mean"].detach())
        return stats

    def _forward(self, batch: dict[str, np.ndarray], sigma: float) -> dict[str, torch.Tensor]:
        """The training pass on one batch, through :attr:`train_module`."""
        return forward_batch(self.train_module, batch, sigma, self.torch_rng)

    def _all_finite(self, finite: bool) -> bool:
        """Whether every worker's loss is finite (one worker here; all ranks under DDP)."""
        return finite

    def _log(self, stats: dict[str, float], batch: dict[str, np.ndarray], mean: torch.Tensor) -> None:
        for key, value in stats.items():
            self._writer.add_scalar(f"train/{key}", value, self.step_count)
        if self.step_count % self.image_every == 1 or self.image_every == 1:
            truth = torch.from_numpy(batch["query_images"][:8]).movedim(-1, 1).float() / 255  # (8, 3, S, S)
            grid = torch.cat([truth, mean[:8].cpu()], dim=3)  # truth | prediction side by side
            self._writer.add_images("train/truth_prediction", grid, self.step_count)

    def train(self, num_steps: int | None = None, seconds: float | None = None, progress: bool = True) -> dict:
        """Run steps until ``num_steps`` more steps or ``seconds`` have passed; return the last stats."""
        if num_steps is None and seconds is None:
            raise ValueError("Give num_steps or seconds")
        try:
            from tqdm.auto import tqdm
        except ImportError as err:  # pragma: no cover - depends on the install
            if progress:
                raise ImportError("A progress bar needs tqdm: `pip install tqdm` (or pass progress=False)") from err
            tqdm = _NoBar

        start, done, stats = time.perf_counter(), 0, {}
        with tqdm(total=num_steps, disable=not progress, desc="train", unit="step") as bar:
            while (num_steps is None or done < num_steps) and (
                seconds is None or time.perf_counter() - start < seconds
            ):
                stats = self.step()
                done += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.1f}", psnr=f"{stats['psnr']:.1f}", refresh=False)
        return stats

    # ------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain containers."""
        with self.lock:
            return {
                "config": self.config.to_dict(),
                "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "step": self.step_count,
                "skipped_steps": self.skipped_steps,
                "numpy_rng": copy.deepcopy(self.np_rng.bit_generator.state),
                "torch_rng": self.torch_rng.get_state(),
                "torch_rng_device": self.torch_rng.device.type,
                "extra": dict(self.extra),
            }

    def save(self, path: str | Path) -> Path:
        """Atomically write a checkpoint."""
        return save_checkpoint(path, self.state())

    @classmethod
    def load(
        cls,
        path: str | Path,
        sampler: Any,
        device: str | torch.device = "cpu",
        config: GQNConfig | None = None,
        **kwargs: Any,
    ) -> Trainer:
        """Resume from a checkpoint written by :meth:`save`.

        ``config`` (default: the saved one) may change the schedules and training
        settings, e.g. to extend a run; its architecture must be the saved one's
        (:class:`world_model.CheckpointError` otherwise).
        """
        data = load_checkpoint(path, map_location=device)
        config = GQNConfig.from_dict(data["config"]) if config is None else config
        trainer = cls(config, sampler, device=device, **kwargs)
        trainer.load_state(data, path)
        return trainer

    def load_state(self, data: dict[str, Any], path: str | Path = "checkpoint") -> None:
        """Restore from checkpoint data; the model is untouched if anything does not fit."""
        check_compatible(data, self.config, path)
        load_weights(GQN(self.config), data, strict_config=False)  # validate on a scratch copy first
        saved_optimizer = data.get("optimizer")
        if saved_optimizer is not None:
            saved = sum(len(group["params"]) for group in saved_optimizer["param_groups"])
            trained = sum(len(group["params"]) for group in self.optimizer.param_groups)
            if saved != trained:
                raise CheckpointError(
                    f"{path}: its optimizer state covers {saved} parameter tensors, this run trains {trained} "
                    "(freeze_representation differs); export the checkpoint (`gqn-gym export`) to start "
                    "a fresh optimizer from its weights"
                )
        with self.lock:
            self.model.load_state_dict(data["model"])
            if saved_optimizer is not None:
                self.optimizer.load_state_dict(saved_optimizer)
            self.step_count = int(data.get("step", 0))
            self.skipped_steps = int(data.get("skipped_steps", 0))
            if "numpy_rng" in data:
                self.np_rng.bit_generator.state = data["numpy_rng"]
            if "torch_rng" in data:
                self._restore_torch_rng(data["torch_rng"].cpu(), data.get("torch_rng_device", "cpu"))
            self.extra = dict(data.get("extra", {}))

    def _restore_torch_rng(self, state: torch.Tensor, saved_on: str) -> None:
        """Restore the noise generator; one saved on another device type is reseeded from its state.

        A CUDA generator's state (16 bytes) cannot be loaded into a CPU generator (5056
        bytes) or the reverse, and the kernels differ anyway, so a resume across device
        types continues deterministically but not bit-identically.
        """
        if saved_on == self.torch_rng.device.type:
            self.torch_rng.set_state(state)
        else:
            digest = hashlib.sha256(state.numpy().tobytes()).digest()
            self.torch_rng.manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class BackgroundTrainer:
    """Runs :meth:`Trainer.step` in a worker thread and publishes weights to the acting side.

    The acting side calls :meth:`copy_weights_to` (or reads :attr:`version`) when it
    is ready for new weights, e.g. between rollouts, so that one rollout is encoded
    by one model.
    """

    def __init__(self, trainer: Trainer, publish_every: int = 10) -> None:
        self.trainer = trainer
        self.publish_every = publish_every
        self.version = 0
        self.error: BaseException | None = None
        self.last_stats: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._published: dict[str, torch.Tensor] | None = None
        self._publish_lock = threading.Lock()

    def _publish(self) -> None:
        with self.trainer.lock:
            state = {k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()}
        with self._publish_lock:
            self._published = state
            self.version += 1

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.last_stats = self.trainer.step()
                if self.trainer.step_count % self.publish_every == 0:
                    self._publish()
        except BaseException as err:  # surfaced by stop()
            self.error = err

    def start(self) -> BackgroundTrainer:
        """Start the worker (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._publish()
            self._thread = threading.Thread(target=self._run, name="gqn-trainer", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the worker after its current step; re-raise any error it hit."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._publish()
        if self.error is not None:
            raise RuntimeError("The background trainer failed") from self.error

    def latest_state_dict(self) -> dict[str, torch.Tensor]:
        """The most recently published weights."""
        with self._publish_lock:
            if self._published is None:
                raise RuntimeError("Nothing published yet: call start()")
            return self._published

    def copy_weights_to(self, model: torch.nn.Module) -> int:
        """Load the latest published weights into ``model``; return their version."""
        with self._publish_lock:
            version, state = self.version, self._published
        if state is None:
            raise RuntimeError("Nothing published yet: call start()")
        model.load_state_dict(state)
        return version

    def __enter__(self) -> BackgroundTrainer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
