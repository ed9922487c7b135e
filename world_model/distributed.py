"""Data-parallel GQN training on ``torch.distributed`` (DistributedDataParallel).

:class:`DistributedTrainer` and the helpers here are what one rank needs; the
command that runs them is ``gqn-gym train`` under torchrun (one code path for one
process and many, :func:`agents.world_model_training.train`)::

    torchrun --nproc_per_node 2 -m gqn_env.cli train --store frames.gqnstore --offline \
        --preset cpu --steps 20000 --checkpoint runs/ddp/gqn.pt --resume

and on several machines the same command on each with ``--nnodes``,
``--node_rank`` and ``--rdzv_endpoint host:port`` (see torchrun's documentation).

How it divides the work:

* **Backend**: ``nccl`` when the processes have CUDA devices, ``gloo`` on CPU
  (:func:`init_from_env`'s ``backend`` overrides). Each rank uses ``cuda:LOCAL_RANK``.
* **Global batch**: ``config.batch_size`` queries per step in total; each of the
  W ranks trains on ``batch_size / W`` of them and DDP averages the gradients,
  which equals the gradient of the mean loss over the global batch. The
  learning-rate and sigma schedules count global steps, as in one process.
* **Data**: each rank loads only its shard of the scene store, the scenes whose
  id ``% W == rank`` (:meth:`SceneStore.load_into`), and samples batches from it
  with its own generators, seeded by :func:`rank_seed` (seed, rank).
* **Skipped steps**: if any rank's loss is not finite, every rank skips the step
  (the flag is all-reduced first), so the replicas never diverge.
* **Checkpoints and logs**: rank 0 alone writes them (atomically). A checkpoint is
  the one-process format plus the world size; resuming (with any world size)
  reseeds each rank's generators from (seed, rank, step), so a resumed run is
  deterministic too.

This module imports torch only (``world_model`` never imports MiniWorld).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from world_model.checkpoint import migrate_config
from world_model.config import GQNConfig
from world_model.trainer import Trainer


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of a rank's batch and latent generators (distinct per rank, reproducible)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Queries per rank; the global batch must split evenly."""
    if global_batch % world_size:
        raise ValueError(f"batch_size {global_batch} does not split over {world_size} ranks")
    return global_batch // world_size


class DistributedTrainer(Trainer):
    """A :class:`Trainer` whose steps run through DistributedDataParallel.

    Call after ``torch.distributed.init_process_group``. Every rank builds the same
    initial weights from ``config.seed`` (and DDP broadcasts rank 0's at
    construction anyway); ``config.batch_size`` is the global batch.
    :meth:`Trainer.load` resumes it from a checkpoint written by any number of ranks.

    Args:
        config: The model config (global batch size).
        sampler: This rank's source of batches (its shard of the data).
        device: This rank's device.
        log_dir: TensorBoard directory, used by rank 0 only.
    """

    def __init__(self, config: GQNConfig, sampler: Any, device: str | torch.device = "cpu", **kwargs: Any) -> None:
        if not dist.is_initialized():
            raise RuntimeError("Initialise torch.distributed first (e.g. run under torchrun)")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.global_config = config
        local = config.replace(batch_size=local_batch_size(config.batch_size, self.world_size))
        if self.rank != 0:
            kwargs["log_dir"] = None
        super().__init__(local, sampler, device=device, **kwargs)
        self._reseed(0)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.train_module = DistributedDataParallel(self.model, device_ids=device_ids)

    def _reseed(self, step: int) -> None:
        seed = rank_seed(self.global_config.seed, self.rank, step)
        self.np_rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator(device=self.device).manual_seed(seed)

    def _all_finite(self, finite: bool) -> bool:
        return not any_rank(not finite, device=self.device)[0]

    def step(self) -> dict[str, float]:
        """One synchronous step on every rank; ``loss``/``mse`` are averaged over ranks."""
        stats = super().step()
        local = torch.tensor([stats["loss"], stats["mse"]], dtype=torch.float64, device=self.device)
        dist.all_reduce(local)
        stats["loss"], stats["mse"] = (local / self.world_size).tolist()
        stats["queries_per_s"] *= self.world_size
        return stats

    def state(self) -> dict[str, Any]:
        """The one-process checkpoint layout, with the global config and the world size."""
        state = super().state()
        state["config"] = self.global_config.to_dict()
        state["extra"] = {**state["extra"], "world_size": self.world_size}
        return state

    def save(self, path: str | Path) -> Path | None:
        """Rank 0 writes the checkpoint atomically; all ranks wait until it is on disk."""
        written = super().save(path) if self.rank == 0 else None
        dist.barrier()
        return written

    def load_state(self, data: dict[str, Any], path: str | Path = "checkpoint") -> None:
        """Restore weights, optimizer and step; reseed this rank's generators for that step."""
        saved = migrate_config(data["config"])
        data = {**data, "config": {**saved, "train": {**saved["train"], "batch_size": self.config.batch_size}}}
        super().load_state(data, path)
        self._reseed(self.step_count)


def scenes_per_rank(max_scenes: int, world_size: int) -> int:
    """Each rank's buffer bound when ``max_scenes`` are split over ``world_size`` ranks (rounded up)."""
    if max_scenes < 1 or world_size < 1:
        raise ValueError(f"max_scenes and world_size must be >= 1, got {max_scenes}, {world_size}")
    return -(-max_scenes // world_size)


def any_rank(*flags: bool, device: str | torch.device = "cpu") -> list[bool]:
    """Each flag OR-ed over all ranks (one all-reduce of a few numbers on ``device``)."""
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def sum_over_ranks(value: float, device: str | torch.device = "cpu") -> float:
    """``value`` summed over all ranks."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


@contextmanager
def torchrun_group(backend: str | None = None) -> Iterator[tuple[int, int, torch.device | None]]:
    """``(rank, world size, device)`` for a command that may run under torchrun.

    Under torchrun (``WORLD_SIZE`` > 1) the process group is initialised on entry and
    destroyed on exit; otherwise this yields ``(0, 1, None)`` and does nothing. On a
    normal exit every rank first waits for the others (a barrier): a rank that tore the
    group down while rank 0, which hosts its store, was still writing a checkpoint could
    abort in gloo's teardown.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        yield 0, 1, None
        return
    rank, world, device = init_from_env(backend)
    try:
        yield rank, world, device
        dist.barrier()
    finally:
        dist.destroy_process_group()


def init_from_env(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Initialise the process group from torchrun's environment; return (rank, world size, device)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    backend = backend or ("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device
