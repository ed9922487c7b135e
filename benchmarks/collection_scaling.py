"""Parallel collection: frames/s into one store from 1, 2, ..., N worker processes, in one run.

Usage::

    python -m benchmarks.collection_scaling [--workers 1 2 4] [--seconds 20] [--image-size 32]

Each setting runs a Gymnasium ``AsyncVectorEnv`` of N scene envs (forkserver
start method: MiniWorld's OpenGL context does not survive ``fork``), random
walkers choosing the actions in the main process, and one
:class:`world_model.StoreWriter` receiving every sub-env's frames (one batch per
vector step, compressed records). Frames/s counts frames that reached the store
file, after a warm-up that builds the envs and loads the textures. The scaling
ratio is frames/s over the one-worker figure of the same run; the ideal is N
while N does not exceed the CPU cores.

Prints a table and writes ``runs/benchmarks/collection_scaling.json`` (``--save``: the
committed ``benchmarks/results/collection_scaling.json``; ``--out PATH``: anywhere).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from agents.collectors import RandomWalker, async_scene_envs, collect_vector
from benchmarks._common import add_output_options, format_table, write_json
from world_model import StoreWriter


def frames_per_second(env_id: str, workers: int, image_size: int, seconds: float, seed: int) -> dict:
    """Collect into a fresh store for ``seconds`` after a warm-up; return the measured rates."""
    envs = async_scene_envs(env_id, workers, image_size=image_size)
    policies = [RandomWalker(np.random.default_rng([seed, i])) for i in range(workers)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.gqnstore"
        with StoreWriter(path, image_size=image_size) as writer:
            t0 = time.perf_counter()
            collect_vector(envs, writer, 200, policies, seed=seed)  # warm-up: textures, first episodes
            steps = max(int(200 * seconds / (time.perf_counter() - t0)), 50)  # about `seconds` of collection
            writer.flush()
            start_frames, start = writer.frames_written, time.perf_counter()
            collect_vector(envs, writer, steps, policies, seed=seed + 1, first_scene_id=1_000_000)
            writer.flush()
            elapsed = time.perf_counter() - start
            frames = writer.frames_written - start_frames
        store_bytes = path.stat().st_size
    envs.close()
    return {
        "workers": workers,
        "frames": frames,
        "seconds": elapsed,
        "frames_per_s": frames / elapsed,
        "store_mb": store_bytes / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = os.cpu_count() or 1
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, 2, cores}))
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per setting")
    parser.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    add_output_options(parser)
    args = parser.parse_args()

    rows = [frames_per_second(args.env_id, n, args.image_size, args.seconds, args.seed) for n in args.workers]
    base = rows[0]["frames_per_s"] / rows[0]["workers"]
    for row in rows:
        row["scaling_vs_1"] = row["frames_per_s"] / base
        row["efficiency"] = row["scaling_vs_1"] / row["workers"]
    print(format_table(rows, ["workers", "frames", "seconds", "frames_per_s", "scaling_vs_1", "efficiency"]))
    print(f"{cores} CPU cores; AsyncVectorEnv (forkserver) -> one StoreWriter")
    path = write_json("collection_scaling", {"args": vars(args), "cpu_count": cores, "rows": rows}, args.out, args.save)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
