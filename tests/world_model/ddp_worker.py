"""Run by test_distributed.py under torchrun: a few DDP steps on the tiny preset.

Writes ``rank<R>.pt`` (weights, the rank-averaged losses and each rank's local batch
size) into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist

from world_model import GQNConfig, SceneBuffer, SceneStore
from world_model.distributed import DistributedTrainer, init_from_env

parser = argparse.ArgumentParser()
parser.add_argument("--store", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--steps", type=int, default=3)
args = parser.parse_args()

torch.set_num_threads(1)
rank, world, device = init_from_env("gloo")
store = SceneStore(args.store)
buffer = SceneBuffer(store.image_size, max_scenes=100, seed=rank)
store.load_into(buffer, shard=(rank, world))
trainer = DistributedTrainer(GQNConfig.tiny(), buffer, device=device)
losses = [trainer.step()["loss"] for _ in range(args.steps)]
state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
result = {"weights": state, "losses": losses, "local_batch": trainer.config.batch_size}
torch.save(result, Path(args.out) / f"rank{rank}.pt")
dist.destroy_process_group()
