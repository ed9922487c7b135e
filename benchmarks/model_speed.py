"""Training speed of candidate GQN configs on this machine: queries/s and achieved GFLOP/s.

For each candidate config, times full training steps (forward, backward, clipped
Adam step) on random batches of a fixed number K of context views, counts the
FLOPs of one forward + backward with ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matrix products; elementwise work is not counted), and compares
the achieved rate with a float32 matrix product timed in the same run, between
the candidates (another process may share the CPU: compare the ratios, and re-run
when the matmul figures of one run disagree).

    python -m benchmarks.model_speed                      # the default candidates, 2 threads
    python -m benchmarks.model_speed --only cpu tiny --steps 5
    python -m benchmarks.model_speed --threads 2 --out /tmp/speed.json

Prints a table and writes ``runs/benchmarks/model_speed.json`` (``--save``: the committed
``benchmarks/results/model_speed.json``; ``--out PATH``: anywhere).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from benchmarks._common import add_output_options, format_table, write_json
from world_model import GQN, GQNConfig
from world_model.model import forward_batch


def candidates() -> dict[str, GQNConfig]:
    """The configs compared (the ``cpu`` preset and neighbours along each lever)."""
    cpu = GQNConfig.cpu()
    return {
        "cpu": cpu,
        "cpu-previous": cpu.replace(hidden_channels=64, inference_channels=64, view_channels=0),
        "cpu-wide-inference": cpu.replace(inference_channels=cpu.hidden_channels),
        "cpu-h64": cpu.replace(hidden_channels=64),
        "cpu-h128": cpu.replace(hidden_channels=128),
        "cpu-h128-L4": cpu.replace(hidden_channels=128, num_layers=4),
        "cpu-L4": cpu.replace(num_layers=4),
        "cpu-L8": cpu.replace(num_layers=8),
        "cpu-k5": cpu.replace(core_kernel_size=5),
        "cpu-r256": cpu.replace(r_channels=256),
        "cpu-z4": cpu.replace(z_channels=4),
        "cpu-tower": cpu.replace(representation="tower"),
        "cpu-unshared": cpu.replace(share_core=False),
        "cpu-b64": cpu.replace(batch_size=64),
        "cpu-no-view": cpu.replace(view_channels=0),
        "paper@32px": GQNConfig.paper().replace(image_size=32, batch_size=8),
    }


def matmul_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """Float32 ``n x n`` matrix product rate in GFLOP/s (torch's BLAS, current threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def make_batch(config: GQNConfig, k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random batch of the sampler's layout with K context views."""
    b, s, d = config.batch_size, config.image_size, config.viewpoint_dim
    return {
        "context_images": rng.integers(0, 256, (b, k, s, s, 3), dtype=np.uint8),
        "context_viewpoints": rng.uniform(-1, 1, (b, k, d)).astype(np.float32),
        "query_images": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
        "query_viewpoints": rng.uniform(-1, 1, (b, d)).astype(np.float32),
    }


def train_step(model: GQN, optimizer: torch.optim.Optimizer, batch: dict[str, np.ndarray]) -> None:
    """One training step as the trainer does it."""
    out = forward_batch(model, batch, sigma=1.0)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
    optimizer.step()


def step_flops(model: GQN, batch: dict[str, np.ndarray]) -> float:
    """FLOPs of one forward + backward, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        forward_batch(model, batch, sigma=1.0)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(name: str, config: GQNConfig, k: int, steps: int) -> dict[str, Any]:
    """Time ``steps`` training steps (after one warm-up) and count their FLOPs."""
    model = GQN(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = make_batch(config, k, np.random.default_rng(0))
    flops = step_flops(model, batch)
    train_step(model, optimizer, batch)  # warm-up (allocator, kernels)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(model, optimizer, batch)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "config": name,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch": config.batch_size,
        "K": k,
        "GFLOP_per_query": flops / config.batch_size / 1e9,
        "step_s": seconds,
        "queries_per_s": config.batch_size / seconds,
        "achieved_GFLOPs": flops / seconds / 1e9,
    }


def main() -> None:
    """Measure the candidates, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per candidate (median reported)")
    parser.add_argument("--context", type=int, default=6, help="context views K per query")
    parser.add_argument("--only", nargs="*", default=None, help="candidate names (or preset names) to run")
    add_output_options(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = candidates()
    names = args.only or list(table)
    rows = []
    for name in names:
        config = table[name] if name in table else GQNConfig.preset(name)
        before = matmul_gflops()
        row = measure(name, config, args.context, args.steps)
        after = matmul_gflops()
        row["matmul_GFLOPs"] = 0.5 * (before + after)
        row["efficiency"] = row["achieved_GFLOPs"] / row["matmul_GFLOPs"]
        rows.append(row)
        print(f"{name}: {row['queries_per_s']:.1f} queries/s, {row['efficiency']:.0%} of matmul", flush=True)
    columns = [
        "config",
        "params_M",
        "batch",
        "GFLOP_per_query",
        "queries_per_s",
        "achieved_GFLOPs",
        "matmul_GFLOPs",
        "efficiency",
    ]
    print(format_table(rows, columns))
    path = write_json(
        "model_speed",
        {
            "args": vars(args),
            "configs": {n: (table.get(n) or GQNConfig.preset(n)).to_dict() for n in names},
            "rows": rows,
        },
        args.out,
        args.save,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
