"""Train a GQN preset for a wall-clock budget from a random walker, then measure it.

Usage::

    python -m benchmarks.world_model --minutes 60 [--preset cpu] [--checkpoint runs/bench/cpu.pt]
    python -m benchmarks.world_model --minutes 1 --preset tiny     # a smoke run

    # data-parallel: one single-threaded process per core (what the 2-core figures use)
    torchrun --standalone --nproc_per_node 2 -m benchmarks.world_model --minutes 60 --threads 1

On these small convolutions one process does not get faster with a second
intra-op thread (measured: about 120 steps a minute with 1 thread and with 2), so
two single-threaded processes under DistributedDataParallel (gloo) train about
twice as fast as one process with two threads. Each rank collects its share of
the scenes and trains on ``batch_size / W`` queries of every global step; rank 0
evaluates and writes the results.

Reports, in one run:

* training throughput (queries/s) and achieved GFLOP/s, next to a float32
  matrix product measured in the same process (the ratio is the efficiency);
* held-out quality: on scenes whose seeds were never used in training, K context
  views from a random walk and query views at other poses in the visited rooms,
  the PSNR of the model's predicted image against (a) the mean training image,
  (b) the context view nearest to the query viewpoint, (c) the same model given
  another scene's context.

Prints a table and writes ``benchmarks/results/world_model_<preset>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist

import gqn_env  # noqa: F401
from agents.world_model_training import OnlineSchedule, make_eval_scenes, train_online
from benchmarks._common import format_table, write_json
from benchmarks.model_speed import step_flops
from gqn_env.cli import config_from_args
from world_model import Trainer, evaluate
from world_model.data import SceneBuffer
from world_model.distributed import DistributedTrainer, scenes_per_rank, sum_over_ranks, torchrun_group
from world_model.evaluation import format_table as format_eval_table


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Float32 matrix-product GFLOP/s of this process (torch's BLAS, its threads).

    Under torch.distributed every rank times it at once and the sum is returned:
    what the machine's cores do together, the peak the ranks' training shares.
    """
    if dist.is_initialized():
        dist.barrier()
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    gflops = 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9
    return sum_over_ranks(gflops) if dist.is_initialized() else gflops


def train_step_flops(trainer: Trainer, buffer: SceneBuffer, world: int = 1) -> float:
    """FLOPs of one global training step (forward + backward): this rank's batch times ``world``."""
    batch = buffer.sample(trainer.model.config.batch_size, np.random.default_rng(123))
    return step_flops(trainer.model, batch) * world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="training budget (collection included)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--anneal-steps", type=int, default=None, help="sigma/lr annealing length (default: preset)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override config fields, e.g. context_max=16"
    )
    parser.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    parser.add_argument("--warmup-scenes", type=int, default=400, help="scenes collected before training")
    parser.add_argument("--eval-scenes", type=int, default=100)
    parser.add_argument("--context", type=int, default=16)
    parser.add_argument("--checkpoint", default=None, help="save the trained model here")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with torchrun_group("gloo") as (rank, world, _):
        run(args, rank, world)


def run(args: argparse.Namespace, rank: int, world: int) -> None:
    """Train, then (rank 0) evaluate and report."""
    peak = matmul_gflops()
    config = config_from_args(args.preset, args.anneal_steps, args.set)
    schedule = OnlineSchedule(env_id=args.env_id, warmup_scenes=args.warmup_scenes)
    buffer = SceneBuffer(
        image_size=config.image_size, max_scenes=scenes_per_rank(schedule.max_scenes, world), seed=rank
    )
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    trainer_cls = DistributedTrainer if world > 1 else Trainer
    if args.resume and ckpt and ckpt.exists():
        trainer = trainer_cls.load(ckpt, buffer)
    else:
        trainer = trainer_cls(config, buffer)
    config = trainer.global_config if world > 1 else trainer.model.config
    start_step = trainer.step_count
    summary = train_online(
        trainer,
        buffer,
        schedule,
        budget_s=args.minutes * 60,
        seed=args.seed,
        checkpoint_path=ckpt,
        first_scene=trainer.extra.get("next_scene", 0),
        progress=rank == 0,
    )
    if rank != 0:
        return
    flops = train_step_flops(trainer, buffer, world)
    steps = trainer.step_count - start_step
    queries_per_s = steps * config.batch_size / summary["train_seconds"]
    achieved = flops * steps / summary["train_seconds"] / 1e9

    env = gym.make(args.env_id, image_size=config.image_size)
    scenes = [s.as_dict() for s in make_eval_scenes(env, args.eval_scenes, num_context=args.context)]
    env.close()
    results = evaluate(trainer.model, scenes, mean_image=buffer.mean_image())
    print(format_eval_table(results))

    rows = [
        {"metric": "processes x threads", "value": f"{world} x {torch.get_num_threads()}"},
        {"metric": "train steps", "value": steps},
        {"metric": "scenes collected", "value": summary["scenes_collected"]},
        {"metric": "queries/s (training)", "value": queries_per_s},
        {"metric": "GFLOP per step (fwd+bwd)", "value": flops / 1e9},
        {"metric": "achieved GFLOP/s", "value": achieved},
        {"metric": "matmul GFLOP/s (same run)", "value": peak},
        {"metric": "efficiency (achieved / matmul)", "value": achieved / peak},
        {"metric": "collection share of time", "value": summary["collect_seconds"] / summary["seconds"]},
    ]
    print(format_table(rows, ["metric", "value"]))
    path = write_json(
        f"world_model_{args.preset}",
        {
            "args": vars(args),
            "config": config.to_dict(),
            "training": {k: v for k, v in summary.items() if k != "last"},
            "throughput": {r["metric"]: r["value"] for r in rows},
            "evaluation": results,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
