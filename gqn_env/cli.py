"""The ``gqn-gym`` command line tool.

Subcommands::

    gqn-gym collect   walk agents through scenes and store their frames
    gqn-gym train     train the GQN world model (online from a walker, or from a store); resumable
    gqn-gym evaluate  held-out PSNR of a checkpoint against the baselines
    gqn-gym imagine   roll out an agent in GQNMaze and write the imagination video
    gqn-gym demo      the README's demo: the bundled model, a rollout, a video
    gqn-gym tour      render frames and the top-down map of a scene to PNG files
    gqn-gym export    strip a checkpoint to weights + config (what gqn_env/assets ships)

Run ``gqn-gym <command> --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def config_from_args(preset: Any, anneal_steps: int | None, overrides: list[str] | None):
    """A :class:`world_model.GQNConfig` with ``--anneal-steps`` and ``--set FIELD=VALUE`` applied.

    ``preset`` is a preset's name or a config (a resumed checkpoint's). A bad ``--set``
    item exits with a message naming it (shared by ``gqn-gym train`` and
    ``benchmarks.world_model``).
    """
    from world_model import GQNConfig

    config = GQNConfig.preset(preset) if isinstance(preset, str) else preset
    if anneal_steps:
        config = config.with_anneal_steps(anneal_steps)
    try:
        return config.with_overrides(overrides or [])
    except ValueError as e:
        raise SystemExit(f"--set: {e}") from None


def _collect(args: argparse.Namespace) -> None:
    import gymnasium as gym
    import numpy as np

    import gqn_env  # noqa: F401
    from agents.collectors import async_scene_envs, collect, collect_vector, make_policy
    from agents.world_model_training import training_seeds
    from world_model.store import StoreWriter

    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    interrupted = False
    with StoreWriter(args.out, image_size=args.image_size, chunk_frames=args.chunk_frames) as writer:
        try:
            if args.workers == 1:
                env = gym.make(args.env_id, image_size=args.image_size)
                policy = make_policy(args.policy, np.random.default_rng(args.seed))
                seeds = training_seeds(args.seed, 0, args.scenes)
                collect(env, writer, seeds, args.steps, policy, args.frame_skip, True)
                env.close()
            else:  # worker processes feeding one store
                envs = async_scene_envs(
                    args.env_id, args.workers, image_size=args.image_size, max_episode_steps=args.steps
                )
                policies = [
                    make_policy(args.policy, np.random.default_rng([args.seed, i])) for i in range(args.workers)
                ]
                steps = -(-args.scenes * args.steps // args.workers)  # ceil: about `scenes` episodes in all
                collect_vector(envs, writer, steps, policies, seed=args.seed, first_scene_id=args.seed * 1_000_003)
                envs.close()
        except KeyboardInterrupt:  # Ctrl-C or `timeout -s INT`: keep what was collected (flushed on exit)
            interrupted = True
    if interrupted:
        print(f"interrupted: {writer.frames_written} frames are in {args.out}", file=sys.stderr)
        raise SystemExit(130)
    print(f"wrote {writer.frames_written} frames of {args.scenes} scenes to {args.out}")


def _train(args: argparse.Namespace) -> None:
    """Train online or from a store; under torchrun, data-parallel with one process per rank."""
    from world_model.distributed import torchrun_group

    with torchrun_group() as (rank, world, device):
        if device is not None:
            args.device = device
        _train_process(args, rank, world)


def train_threads(requested: int | None, preset: str, world: int) -> int:
    """Torch threads for one training process.

    ``requested`` wins. Otherwise: 1 for the ``tiny`` preset, whose small matrix
    products lose more to thread handoffs than they gain (measured: 30 ms a step
    with one thread against 217 ms with two while another process was busy), and
    for several processes (each rank gets a core); the machine's cores for one
    process of a larger preset.
    """
    if requested is not None:
        if requested < 1:
            raise SystemExit(f"--threads must be >= 1, got {requested}")
        return requested
    if preset == "tiny" or world > 1:
        return 1
    return max(1, os.cpu_count() or 1)


def _train_process(args: argparse.Namespace, rank: int, world: int) -> None:
    import torch

    from agents.world_model_training import OnlineSchedule, train_online
    from world_model import CheckpointError, GQNConfig, Trainer, load_checkpoint
    from world_model.checkpoint import check_compatible
    from world_model.data import SceneBuffer
    from world_model.distributed import DistributedTrainer, scenes_per_rank

    torch.set_num_threads(train_threads(args.threads, args.preset, world))

    ckpt = Path(args.checkpoint)
    resume = args.resume and ckpt.exists()
    if resume:  # the checkpoint's config; --set/--anneal-steps may change its schedules, not its architecture
        data = load_checkpoint(ckpt)
        saved = GQNConfig.from_dict(data["config"])
        config = config_from_args(saved, args.anneal_steps, args.set)
        try:
            check_compatible(data, config, ckpt)
        except CheckpointError as e:
            raise SystemExit(f"--set: a resumed run keeps its checkpoint's architecture; {e}") from None
    else:
        config = config_from_args(args.preset, args.anneal_steps, args.set)
    schedule = OnlineSchedule(
        env_id=args.env_id,
        policy=args.policy,
        max_scenes=args.max_scenes,
        warmup_scenes=args.warmup_scenes,
        checkpoint_every_s=args.checkpoint_every,
    )
    max_scenes = scenes_per_rank(args.max_scenes, world)
    if args.store:
        from world_model.store import SceneStore

        stores = [SceneStore(path) for path in args.store]
        buffer = SceneBuffer(stores[0].image_size, stores[0].viewpoint_dim, max_scenes=max_scenes, seed=rank)
        for store in stores:  # each rank its scenes; a store unlike the first raises a clear ValueError
            try:
                store.load_into(buffer, shard=(rank, world) if world > 1 else None)
            except ValueError as e:
                raise SystemExit(str(e)) from None
        if buffer.image_size != config.image_size:
            raise SystemExit(
                f"{args.store[0]} holds {buffer.image_size}px frames; the model takes {config.image_size}px"
            )
        schedule.warmup_scenes = 0
        if args.offline:
            schedule.collect_every = 1 << 62  # never collect: train on the store only
    else:
        buffer = SceneBuffer(image_size=config.image_size, max_scenes=max_scenes, seed=rank)
    cls = DistributedTrainer if world > 1 else Trainer
    if resume:
        trainer = cls.load(ckpt, buffer, device=args.device, log_dir=args.log_dir, config=config)
        if rank == 0:
            print(f"resuming from {ckpt} at step {trainer.step_count}")
            if config != saved:
                before = saved.to_dict()
                print(f"with changed settings { {k: v for k, v in config.to_dict().items() if before[k] != v} }")
    else:
        trainer = cls(config, buffer, device=args.device, log_dir=args.log_dir)
    summary = train_online(
        trainer,
        buffer,
        schedule,
        budget_s=args.minutes * 60 if args.minutes else None,
        max_steps=args.steps,
        seed=args.seed,
        checkpoint_path=ckpt,
        first_scene=trainer.extra.get("next_scene", 0),
        progress=not args.no_progress,
    )
    if rank == 0:
        print(json.dumps({"processes": world, **{k: v for k, v in summary.items() if k != "last"}}, indent=2))
        print(f"checkpoint: {ckpt}")


def _evaluate(args: argparse.Namespace) -> None:
    import gymnasium as gym

    import gqn_env  # noqa: F401
    from agents.world_model_training import make_eval_scenes
    from gqn_env.envs.gqn_maze import bundled_checkpoint, load_world_model
    from world_model import CheckpointError, evaluate, load_checkpoint
    from world_model.evaluation import format_table

    if args.scenes < 2:
        raise SystemExit(
            f"--scenes must be >= 2 (the shuffled-context baseline borrows another scene), got {args.scenes}"
        )
    if args.context < 1:
        raise SystemExit(f"--context must be >= 1, got {args.context}")
    try:
        model = load_world_model(args.checkpoint, args.device)
    except (FileNotFoundError, CheckpointError, ValueError) as e:
        raise SystemExit(f"gqn-gym evaluate: {e}") from None
    path = args.checkpoint or bundled_checkpoint()
    saved = load_checkpoint(path)  # its step and mean image; load_world_model keeps only the model
    if int(saved.get("step", 0)) == 0:
        print(f"warning: {path} was saved at step 0: an untrained model", file=sys.stderr)
    env = gym.make(args.env_id, image_size=model.config.image_size)
    scenes = [s.as_dict() for s in make_eval_scenes(env, args.scenes, num_context=args.context)]
    mean_image = saved.get("extra", {}).get("mean_image")
    mean_image = mean_image.numpy() if mean_image is not None else _mean_training_image(env, model.config.image_size)
    results = evaluate(model, scenes, mean_image=mean_image, device=args.device)
    print(format_table(results))
    if args.out:
        from world_model.atomic import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2))


def _mean_training_image(env, image_size: int, scenes: int = 50):
    import numpy as np

    from agents.collectors import collect, make_policy
    from agents.world_model_training import training_seeds
    from world_model.data import SceneBuffer

    buffer = SceneBuffer(image_size=image_size, max_scenes=scenes)
    collect(env, buffer, training_seeds(0, 0, scenes), 216, make_policy("random", np.random.default_rng(0)), 4)
    return buffer.mean_image()


def _export(args: argparse.Namespace) -> None:
    from world_model.checkpoint import export_for_inference

    path = export_for_inference(args.checkpoint, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _run_example(name: str, argv: list[str]) -> None:
    import runpy

    script = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    if not script.exists():
        raise SystemExit(f"{script} not found: the examples ship with the source checkout")
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``gqn-gym`` and ``python -m gqn_env.cli``."""
    parser = argparse.ArgumentParser(
        prog="gqn-gym", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="walk agents through scenes and store their frames")
    p.add_argument("--out", required=True, help="store file to append to")
    p.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    p.add_argument("--scenes", type=int, default=100)
    p.add_argument("--steps", type=int, default=216, help="env steps per scene")
    p.add_argument("--frame-skip", type=int, default=4)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--policy", choices=["random", "explorer"], default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-frames", type=int, default=256, help="frames per store record")
    p.add_argument(
        "--workers", type=int, default=1, help="env worker processes (AsyncVectorEnv); > 1 keeps every frame"
    )
    p.set_defaults(func=_collect)

    p = sub.add_parser(
        "train",
        help="train the world model (online from a walker, or from a store)",
        description="Train the world model. Under torchrun (e.g. `torchrun --standalone --nproc_per_node 2 "
        "-m gqn_env.cli train ...`) the ranks train one model data-parallel, each collecting its share of scenes.",
    )
    p.add_argument("--checkpoint", default="runs/gqn/checkpoint.pt")
    p.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per process (default: 1 for tiny or torchrun, else all)",
    )
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument("--steps", type=int, default=None, help="stop at this many gradient steps")
    p.add_argument("--anneal-steps", type=int, default=None, help="length of the sigma/lr annealing")
    p.add_argument(
        "--set", nargs="+", default=[], metavar="FIELD=VALUE", help="override config fields, e.g. hidden_channels=48"
    )
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--checkpoint-every", type=float, default=600.0, help="seconds between checkpoints")
    p.add_argument("--store", nargs="+", default=None, help="start from the frames of these stores")
    p.add_argument("--offline", action="store_true", help="with --store: train on the store only")
    p.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    p.add_argument("--policy", choices=["random", "explorer"], default="random")
    p.add_argument("--max-scenes", type=int, default=4000)
    p.add_argument("--warmup-scenes", type=int, default=400, help="scenes collected before the first step")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-dir", default=None, help="TensorBoard directory")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="held-out PSNR against the baselines")
    p.add_argument("--checkpoint", default=None, help="default: the bundled model")
    p.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    p.add_argument(
        "--scenes", type=int, default=100, help="held-out scenes (default: the 100 of benchmarks.world_model)"
    )
    p.add_argument("--context", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="strip optimizer state from a checkpoint, for acting (e.g. bundling)")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.set_defaults(func=_export)

    for name, help_text in (
        ("imagine", "roll out an agent in GQNMaze and write the imagination video"),
        ("demo", "the README's demo"),
        ("tour", "render frames and the top-down map of a scene"),
    ):
        sub.add_parser(name, help=help_text, add_help=False)

    args, rest = parser.parse_known_args(argv)
    if args.command in ("imagine", "demo"):
        _run_example("imagine", rest)
    elif args.command == "tour":
        _run_example("scene_tour", rest)
    else:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.func(args)


if __name__ == "__main__":
    main()
