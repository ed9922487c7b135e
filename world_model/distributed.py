r"""Data-parallel GQN training on ``torch.distributed`` (DistributedDataParallel).

Run it with torchrun, one process per GPU (or per group of CPU cores)::

    torchrun --nproc_per_node 2 -m world_model.distributed \\
        --store frames.gqnstore --preset cpu --steps 20000 --checkpoint runs/ddp/gqn.pt

and on several machines the same command on each with ``--nnodes``,
``--node_rank`` and ``--rdzv_endpoint host:port`` (see torchrun's documentation).

How it divides the work:

* **Backend**: ``nccl`` when the processes have CUDA devices, ``gloo`` on CPU
  (``--backend`` overrides). Each rank uses ``cuda:LOCAL_RANK``.
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

``world_model`` never imports MiniWorld, so this entry point reads frames from a
store written by collectors (``gqn-gym collect``). Online training, where every
rank also collects its share of the scenes, is ``gqn-gym train`` under torchrun
(``agents.world_model_training.train_online`` handles the ranks).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

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
        data = {**data, "config": {**data["config"], "batch_size": self.config.batch_size}}
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
    destroyed on exit; otherwise this yields ``(0, 1, None)`` and does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        yield 0, 1, None
        return
    rank, world, device = init_from_env(backend)
    try:
        yield rank, world, device
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


def main(argv: list[str] | None = None) -> None:
    """Train from a scene store under torchrun (see the module docstring)."""
    from world_model.data import SceneBuffer
    from world_model.store import SceneStore

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="scene store written by `gqn-gym collect`")
    parser.add_argument("--preset", default="cpu", help="tiny, cpu or paper (ignored when resuming)")
    parser.add_argument("--steps", type=int, required=True, help="train until this many global steps")
    parser.add_argument("--checkpoint", required=True, help="written by rank 0; resumed from when it exists")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    parser.add_argument("--log-dir", default=None, help="TensorBoard directory (rank 0)")
    parser.add_argument("--backend", choices=("gloo", "nccl"), default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per rank")
    parser.add_argument("--max-scenes", type=int, default=100_000, help="scenes kept in memory per rank")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rank, world, device = init_from_env(args.backend)
    try:
        store = SceneStore(args.store)
        buffer = SceneBuffer(store.image_size, store.viewpoint_dim, max_scenes=args.max_scenes, seed=rank)
        frames = store.load_into(buffer, shard=(rank, world))
        ckpt = Path(args.checkpoint)
        if ckpt.exists():
            trainer = DistributedTrainer.load(ckpt, buffer, device=device, log_dir=args.log_dir)
        else:
            config = GQNConfig.preset(args.preset)
            if store.image_size != config.image_size:
                config = config.replace(image_size=store.image_size)
            trainer = DistributedTrainer(config, buffer, device=device, log_dir=args.log_dir)
        if rank == 0:
            print(
                f"world size {world}, backend {dist.get_backend()}, global batch {trainer.global_config.batch_size}, "
                f"step {trainer.step_count} -> {args.steps}; "
                f"rank 0 holds {frames} frames of {buffer.num_scenes} scenes",
                flush=True,
            )
        while trainer.step_count < args.steps:
            stats = trainer.step()
            if trainer.step_count % args.checkpoint_every == 0 or trainer.step_count == args.steps:
                trainer.save(ckpt)
                if rank == 0:
                    print(f"step {trainer.step_count} loss {stats['loss']:.2f} mse {stats['mse']:.5f}", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
