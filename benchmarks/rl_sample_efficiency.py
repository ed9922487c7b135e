"""PPO sample efficiency: GQN representation vs raw pixels, on the same scenes.

Usage::

    python -m benchmarks.rl_sample_efficiency            # default: about an hour on 2 CPU cores
    python -m benchmarks.rl_sample_efficiency --quick    # a few minutes

Each finished (variant, seed) run is saved to ``<out>.partial.json``; if the
invocation is interrupted, the same command resumes after the last finished run.

Variants, each over ``--seeds`` seeds with identical scene seeds:

* ``gqn``: GQNMaze with the bundled, frozen world model (MultiInputPolicy);
* ``gqn_online``: GQNMaze with a ``cpu``-preset world model trained from scratch
  on the agent's own frames by :class:`agents.rl.WorldModelCallback`;
* ``pixels``: the egocentric image (``--pixel-size``), 4 frames stacked, CnnPolicy.

Reports steps to reach ``--threshold`` success rate (binned training episodes),
area under the success curve, and the ratio pixels / representation; writes a
PNG of the curves (mean and a 95% band over seeds) and a JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CallbackList

import gqn_env  # noqa: F401
from agents.rl import SuccessCurve, WorldModelCallback, make_vec_env, steps_to_threshold, success_curve
from benchmarks._common import RESULTS_DIR, format_table, write_json
from world_model import GQNConfig, SceneBuffer, Trainer
from world_model.atomic import atomic_path


def run(variant: str, seed: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    scene = {"max_episode_steps": args.episode_steps}
    gqn_kwargs = {**scene, "obs_keys": args.gqn_obs}
    callbacks = [SuccessCurve()]
    if variant == "gqn_online":
        config = GQNConfig.cpu().replace(seed=seed)
        buffer = SceneBuffer(image_size=config.image_size, max_scenes=2000)
        trainer = Trainer(config, buffer)
        venv = make_vec_env(variant, args.env_id, args.num_envs, seed, trainer.model, gqn_kwargs)
        callbacks.append(WorldModelCallback(trainer, buffer, updates_per_rollout=args.wm_updates))
    elif variant == "gqn":
        venv = make_vec_env(variant, args.env_id, args.num_envs, seed, None, gqn_kwargs)
    else:
        venv = make_vec_env(variant, args.env_id, args.num_envs, seed, None, {**scene, "image_size": args.pixel_size})
    policy = "CnnPolicy" if variant == "pixels" else "MultiInputPolicy"
    agent = PPO(policy, venv, n_steps=args.n_steps, batch_size=256, n_epochs=4, seed=seed, device="cpu", verbose=0)
    start = time.perf_counter()
    agent.learn(args.steps, callback=CallbackList(callbacks))
    seconds = time.perf_counter() - start
    venv.close()
    curve = success_curve(callbacks[0].timesteps, callbacks[0].successes, args.steps, args.bins)
    return {
        "variant": variant,
        "seed": seed,
        "curve": curve.tolist(),
        "steps_to_threshold": steps_to_threshold(curve, args.steps, args.threshold),
        "auc": float(np.nanmean(curve)) if np.isfinite(curve).any() else 0.0,
        "episodes": len(callbacks[0].timesteps),
        "seconds": seconds,
    }


def run_all(args: argparse.Namespace, partial: Path) -> list[dict]:
    """Run every (seed, variant), saving each finished run to ``partial`` as it ends.

    An interrupted invocation (a killed shell, a rebooted machine) is picked up by
    running the same command again: runs already in ``partial`` with identical
    settings are kept, not repeated (``--restart`` discards them).
    """
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "restart")}
    results = []
    if partial.exists() and not args.restart:
        saved = json.loads(partial.read_text())
        if saved.get("settings") == settings:
            results = saved["runs"]
            print(f"resuming: {len(results)} finished run(s) from {partial}")
    done = {(r["variant"], r["seed"]) for r in results}
    for seed in range(args.seeds):
        for variant in args.variants:
            if (variant, seed) in done:
                continue
            result = run(variant, seed, args)
            results.append(result)
            print(f"{variant} seed {seed}: auc {result['auc']:.3f}, {result['seconds'] / 60:.1f} min", flush=True)
            with atomic_path(partial) as tmp:
                tmp.write_text(json.dumps({"settings": settings, "runs": results}))
    return results


def summarize(results: list[dict], args: argparse.Namespace) -> tuple[list[dict], dict[str, float]]:
    """One row per variant (median steps to threshold, mean AUC, ...) and the pixel/representation ratios.

    ``steps_ratio_pixels_over_<rep>`` is pixels' steps to threshold over the
    representation's; when the representation never reached the threshold in
    ``args.steps`` but pixels did, the ratio is only bounded, and reported as
    ``steps_ratio_pixels_over_<rep>_at_most`` = pixels' steps / ``args.steps``.
    Neither reaching it gives no steps ratio; the AUC ratio is always reported.
    """
    rows = []
    for variant in args.variants:
        mine = [r for r in results if r["variant"] == variant]
        rows.append(
            {
                "variant": variant,
                "steps_to_threshold": float(np.median([r["steps_to_threshold"] for r in mine])),
                "auc": float(np.mean([r["auc"] for r in mine])),
                "final_success": float(np.nanmean([r["curve"][-1] for r in mine])),
                "minutes": sum(r["seconds"] for r in mine) / 60,
            }
        )
    by = {r["variant"]: r for r in rows}
    ratios = {}
    for rep in ("gqn", "gqn_online"):
        if rep not in by or "pixels" not in by:
            continue
        pixels, mine = by["pixels"]["steps_to_threshold"], by[rep]["steps_to_threshold"]
        if np.isfinite(mine) and np.isfinite(pixels):
            ratios[f"steps_ratio_pixels_over_{rep}"] = pixels / mine
        elif np.isfinite(pixels):
            ratios[f"steps_ratio_pixels_over_{rep}_at_most"] = pixels / args.steps
        ratios[f"auc_ratio_{rep}_over_pixels"] = by[rep]["auc"] / max(by["pixels"]["auc"], 1e-9)
    return rows, ratios


def plot(results: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = (np.arange(args.bins) + 0.5) * args.steps / args.bins
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in args.variants:
        curves = np.array([r["curve"] for r in results if r["variant"] == variant], dtype=float)
        mean = np.nanmean(curves, axis=0)
        half = 1.96 * np.nanstd(curves, axis=0) / np.sqrt(max(len(curves), 1))
        ax.plot(x, mean, label=variant)
        ax.fill_between(x, mean - half, mean + half, alpha=0.2)
    ax.axhline(args.threshold, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="environment steps", ylabel="success rate (training episodes)", title=f"PPO on {args.env_id}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="GQNMazeScene-S2-v0")
    parser.add_argument("--variants", nargs="+", default=["gqn", "gqn_online", "pixels"])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--n-steps", type=int, default=256, help="PPO rollout length per env")
    parser.add_argument("--episode-steps", type=int, default=96)
    parser.add_argument("--pixel-size", type=int, default=64)
    parser.add_argument(
        "--gqn-obs", nargs="+", default=["representation", "viewpoint"], help="observation keys of the GQN variants"
    )
    parser.add_argument("--wm-updates", type=int, default=8, help="world-model steps per rollout (gqn_online)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="4k steps, 1 seed: a smoke run of a few minutes")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--restart", action="store_true", help="ignore runs saved by an interrupted invocation with the same settings"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.bins, args.n_steps = 4096, 1, 8, 128

    name = "rl_sample_efficiency_quick" if args.quick else "rl_sample_efficiency"
    json_path = Path(args.out) if args.out else RESULTS_DIR / f"{name}.json"
    results = run_all(args, json_path.with_suffix(".partial.json"))
    rows, ratios = summarize(results, args)
    print(format_table(rows, ["variant", "steps_to_threshold", "auc", "final_success", "minutes"]))
    for key, value in ratios.items():
        print(f"{key}: {value:.3g}")
    png = json_path.with_suffix(".png")
    plot(results, args, png)
    path = write_json(name, {"args": vars(args), "rows": rows, "ratios": ratios, "runs": results}, json_path)
    json_path.with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
