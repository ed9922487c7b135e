"""The world-model training loop's state and its generic hooks (no env needed).

:func:`agents.world_model_training.train` runs a plain loop of ``trainer.step()``;
periodic work plugs in as :class:`Hook` objects (SB3's callbacks in miniature),
each seeing the run's :class:`TrainingLoop`. This module holds the hooks that need
no scene env: :class:`Checkpoint` and :class:`Progress`; collection and evaluation
hooks are in :mod:`agents.world_model_training`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from world_model.config import GQNConfig
from world_model.data import SceneBuffer
from world_model.distributed import any_rank

__all__ = ["Checkpoint", "Hook", "Progress", "TrainingLoop"]


@dataclass
class TrainingLoop:
    """The state of a run that hooks see: the trainer, its buffer, this process's rank, the clock, counters."""

    trainer: Any
    """A :class:`world_model.Trainer` (a :class:`~world_model.distributed.DistributedTrainer` under torchrun)."""
    buffer: SceneBuffer
    """This rank's frames."""
    rank: int
    world: int
    start: float
    """``time.perf_counter()`` when the hooks started (the model built, stores loaded): the budget counts from here."""
    budget_s: float | None = None
    """Wall-clock budget in seconds, if any."""
    max_steps: int | None = None
    """Stop when the trainer's ``step_count`` reaches this, if given."""
    steps: int = 0
    """Gradient steps of this run (the trainer's ``step_count`` includes a resumed run's earlier ones)."""
    stats: dict[str, float] = field(default_factory=dict)
    """The latest step's statistics."""
    scenes_collected: int = 0
    """Scenes walked by all ranks (the :class:`Collect` hook counts them)."""
    frames_collected: int = 0
    """Frames this rank collected (summed over ranks in :attr:`summary`)."""
    collect_seconds: float = 0.0
    """Seconds this rank spent collecting."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Filled after the last step, before the end hooks (which may add to it, e.g. ``evaluation``): steps,
    scenes and frames collected (all ranks), seconds in all and collecting (this rank), the last stats."""

    @property
    def config(self) -> GQNConfig:
        """The model config with the global batch size."""
        return getattr(self.trainer, "global_config", self.trainer.config)

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.perf_counter() - self.start

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over the ranks: every rank takes the same decision (their clocks differ)."""
        return any_rank(*flags, device=self.trainer.device) if self.world > 1 else list(flags)

    def out_of_budget(self) -> bool:
        """Whether the time or step budget is spent (on any rank)."""
        budget = self.budget_s
        spent = (budget is not None and self.elapsed() >= budget) or (
            self.max_steps is not None and self.trainer.step_count >= self.max_steps
        )
        return self.agree(spent)[0]

    def say(self, message: str, file: Any = None) -> None:
        """Print on rank 0 only."""
        if self.rank == 0:
            print(message, file=file or sys.stdout, flush=True)


class Hook:
    """Periodic work on the training loop; override what you need.

    Every rank calls every method in the same order, so a hook may use collectives
    (e.g. :meth:`TrainingLoop.agree`) and decide on rank 0 alone what only rank 0 does.
    """

    def on_start(self, loop: TrainingLoop) -> None:
        """Before the first step, once the trainer and buffer are built."""

    def on_step(self, loop: TrainingLoop) -> None:
        """After each gradient step."""

    def on_end(self, loop: TrainingLoop) -> None:
        """After the last step (not reached by a run without any step)."""

    def close(self) -> None:
        """Release resources; always called, also on errors."""


class Checkpoint(Hook):
    """Save every ``every_s`` seconds (0: every step) and at the end; rank 0 writes, atomically.

    The checkpoint also holds the buffer's mean image (a baseline of ``gqn-gym evaluate``).
    Without a progress bar each save prints a line.
    """

    def __init__(self, path: str | Path, every_s: float, verbose: bool = False) -> None:
        self.path = Path(path)
        self.every_s = every_s
        self.verbose = verbose

    def on_start(self, loop: TrainingLoop) -> None:
        """Start the clock."""
        self.last = time.perf_counter()

    def on_step(self, loop: TrainingLoop) -> None:
        """Save if ``every_s`` have passed (on any rank)."""
        if loop.agree(time.perf_counter() - self.last >= self.every_s)[0]:
            self.save(loop)

    def on_end(self, loop: TrainingLoop) -> None:
        """Save the final state."""
        self.save(loop)

    def save(self, loop: TrainingLoop) -> None:
        """Record the mean image, then save."""
        if len(loop.buffer):
            mean = loop.buffer.mean_image().astype(np.float32)  # (S, S, 3)
            loop.trainer.extra["mean_image"] = torch.from_numpy(mean)
        loop.trainer.save(self.path)
        self.last = time.perf_counter()
        if self.verbose and loop.stats:
            s = loop.stats
            loop.say(f"step {loop.trainer.step_count} loss {s['loss']:.2f} mse {s['mse']:.5f}: saved {self.path}")


class Progress(Hook):
    """A tqdm bar on rank 0: seconds of the budget, or steps."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_start(self, loop: TrainingLoop) -> None:
        """Open the bar."""
        if loop.rank == 0:
            from tqdm.auto import tqdm

            budget = loop.budget_s
            total, unit = (int(budget), "s") if budget is not None else (loop.max_steps, "step")
            self.bar = tqdm(total=total, unit=unit, desc="train")

    def on_step(self, loop: TrainingLoop) -> None:
        """Advance the bar and show the latest loss."""
        if self.bar is None:
            return
        budget = loop.budget_s
        self.bar.n = int(min(loop.elapsed(), budget)) if budget is not None else loop.trainer.step_count
        stats = loop.stats
        self.bar.set_postfix({k: f"{stats[k]:.4g}" for k in ("loss", "mse", "sigma") if k in stats}, refresh=False)
        self.bar.refresh()

    def on_end(self, loop: TrainingLoop) -> None:
        """Close the bar before the end hooks' output (e.g. an evaluation's)."""
        self.close()

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
