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

Prints a table and writes ``runs/benchmarks/world_model_<preset>.json`` (``--save``: the
committed ``benchmarks/results/world_model_<preset>.json``; ``--out PATH``: anywhere).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.distributed as dist

from agents.training_loop import Hook, TrainingLoop
from agents.world_model_training import RunConfig, train
from benchmarks._common import add_output_options, format_table, write_json
from benchmarks.model_speed import step_flops
from world_model import Trainer
from world_model.data import SceneBuffer
from world_model.distributed import sum_over_ranks
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


class MatmulPeak(Hook):
    """Measures :func:`matmul_gflops` once the run's threads and process group are set up."""

    gflops = float("nan")

    def on_start(self, loop: TrainingLoop) -> None:
        self.gflops = matmul_gflops()


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
    add_output_options(parser)
    args = parser.parse_args()
    run = RunConfig(
        preset=args.preset,
        anneal_steps=args.anneal_steps,
        overrides=args.set,
        minutes=args.minutes,
        checkpoint=args.checkpoint,
        resume=args.resume,
        env_id=args.env_id,
        warmup_scenes=args.warmup_scenes,
        backend="gloo",  # the figures are CPU figures
        threads=args.threads,
        seed=args.seed,
        eval_scenes=args.eval_scenes,
        eval_context=args.context,
    )
    peak = MatmulPeak()
    loop = train(run, hooks=[peak])
    if loop.rank == 0:
        report(args, loop, peak.gflops)


def report(args: argparse.Namespace, loop: TrainingLoop, peak: float) -> None:
    """Print the throughput and held-out tables; write the JSON results."""
    config, summary, results = loop.config, loop.summary, loop.summary["evaluation"]
    flops = train_step_flops(loop.trainer, loop.buffer, loop.world)
    steps = summary["steps"]
    queries_per_s = steps * config.batch_size / summary["train_seconds"]
    achieved = flops * steps / summary["train_seconds"] / 1e9
    print(format_eval_table(results))

    rows = [
        {"metric": "processes x threads", "value": f"{loop.world} x {torch.get_num_threads()}"},
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
            "training": {k: v for k, v in summary.items() if k not in ("last", "evaluation")},
            "throughput": {r["metric"]: r["value"] for r in rows},
            "evaluation": results,
        },
        args.out,
        args.save,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
