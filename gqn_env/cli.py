"""The ``gqn-gym`` command line tool.

Subcommands::

    gqn-gym collect   walk agents through scenes and store their frames
    gqn-gym train     train the GQN world model (online from a walker, or from a store); resumable
    gqn-gym evaluate  held-out PSNR of a checkpoint against the baselines
    gqn-gym imagine   roll out an agent in GQNMaze and write the imagination video
    gqn-gym demo      the README's demo: the bundled model, a rollout, a video
    gqn-gym tour      render frames and the top-down map of a scene to PNG files
    gqn-gym export    strip a checkpoint to weights + config (what gqn_env/assets ships)
    gqn-gym add-map   give a trained model a map head for the generator (agents' inputs unchanged)
    gqn-gym add-count give a trained model's generator the context's length (agents' inputs unchanged)

Run ``gqn-gym <command> --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _collect(args: argparse.Namespace) -> None:
    import gymnasium as gym
    import numpy as np

    import gqn_env  # noqa: F401
    from agents.collectors import async_scene_envs, collect, collect_vector, make_policy
    from agents.world_model_training import training_seeds
    from world_model.store import StoreWriter

    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    if args.top_down and args.workers > 1:
        raise SystemExit("--top-down collects with one worker (--workers 1)")
    interrupted = False
    with StoreWriter(args.out, image_size=args.image_size, chunk_frames=args.chunk_frames) as writer:
        try:
            if args.workers == 1:
                env = gym.make(args.env_id, image_size=args.image_size)
                policy = make_policy(args.policy, np.random.default_rng(args.seed))
                seeds = training_seeds(args.seed, 0, args.scenes)
                collect(env, writer, seeds, args.steps, policy, args.frame_skip, True, top_down=args.top_down)
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
    from agents.world_model_training import RunConfig, TrainingRunError, train

    try:
        run = RunConfig(
            preset=args.preset,
            anneal_steps=args.anneal_steps,
            overrides=args.set,
            minutes=args.minutes,
            steps=args.steps,
            checkpoint=args.checkpoint,
            resume=args.resume,
            checkpoint_every_s=args.checkpoint_every,
            stores=args.store or [],
            online=not args.offline,
            env_id=args.env_id,
            policy=args.policy,
            warmup_scenes=args.warmup_scenes,
            frame_skip=args.frame_skip,
            max_scenes=args.max_scenes,
            device=args.device,
            backend=args.backend,
            threads=args.threads,
            seed=args.seed,
            log_dir=args.log_dir,
            progress=not args.no_progress,
        )
    except ValueError as e:  # settings that contradict each other
        raise SystemExit(f"gqn-gym train: {e}") from None
    try:
        loop = train(run)
    except TrainingRunError as e:
        raise SystemExit(f"gqn-gym train: {e}") from None
    if loop.rank == 0:
        print(json.dumps({"processes": loop.world, **{k: v for k, v in loop.summary.items() if k != "last"}}, indent=2))
        print(f"checkpoint: {run.checkpoint}")


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
    progress = not args.no_progress
    env = gym.make(args.env_id, image_size=model.config.image_size)
    scenes = [s.as_dict() for s in make_eval_scenes(env, args.scenes, num_context=args.context, progress=progress)]
    mean_image = saved.get("extra", {}).get("mean_image")
    if mean_image is not None:
        mean_image = mean_image.numpy()
    else:
        mean_image = _mean_training_image(env, model.config.image_size, progress=progress)
    env.close()
    results = evaluate(model, scenes, mean_image=mean_image, device=args.device, progress=progress)
    print(format_table(results))
    if args.out:
        from world_model.atomic import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2))


def _mean_training_image(env, image_size: int, scenes: int = 50, progress: bool = False):
    import numpy as np

    from agents.collectors import collect, make_policy
    from agents.world_model_training import training_seeds
    from world_model.data import SceneBuffer

    buffer = SceneBuffer(image_size=image_size, max_scenes=scenes)
    walker = make_policy("random", np.random.default_rng(0))
    if progress:
        print("no mean image in the checkpoint: collecting training scenes for it", file=sys.stderr)
    collect(env, buffer, training_seeds(0, 0, scenes), 216, walker, 4, progress=progress)
    return buffer.mean_image()


def _export(args: argparse.Namespace) -> None:
    from world_model.checkpoint import export_for_inference

    path = export_for_inference(args.checkpoint, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _add_map(args: argparse.Namespace) -> None:
    from world_model.checkpoint import CheckpointError, add_map_head

    try:
        path = add_map_head(
            args.checkpoint, args.out, args.channels, seed=args.seed, layout=args.layout, replace=args.replace
        )
    except (FileNotFoundError, CheckpointError, ValueError) as e:  # the user's file or option: one line
        sys.exit(f"gqn-gym add-map: {e}")
    before = f"{args.checkpoint} without its map head" if args.replace else args.checkpoint
    print(f"wrote {path}: a map head of {args.channels} channels, renders as {before} until trained")


def _widen(args: argparse.Namespace) -> None:
    from world_model.checkpoint import CheckpointError, add_count_input, add_coverage

    change, what = {
        "add-count": (add_count_input, f"the generator reads the context's length, renders as {args.checkpoint}"),
        "add-coverage": (add_coverage, "the generator reads the map head's per-cell means and view counts"),
    }[args.command]
    try:
        path = change(args.checkpoint, args.out)
    except (FileNotFoundError, CheckpointError, ValueError) as e:  # the user's file: one line
        sys.exit(f"gqn-gym {args.command}: {e}")
    print(f"wrote {path}: {what} until trained")


def _imagine(args: argparse.Namespace) -> None:
    import gymnasium as gym
    import numpy as np

    import gqn_env  # noqa: F401  (registers GQNMaze-v0)
    from agents.collectors import make_policy
    from gqn_env.wrappers.imagination import rollout_imagination
    from world_model import CheckpointError

    kwargs = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    try:
        env = gym.make(args.env_id, render_mode="rgb_array", map_size=192, **kwargs)
    except (FileNotFoundError, CheckpointError) as e:  # the user's file: one line, not a traceback
        sys.exit(f"gqn-gym {args.command}: {e}")
    policy = make_policy(args.policy, np.random.default_rng(args.seed))
    files = rollout_imagination(env, policy, args.steps, args.seed, args.out, args.fps, args.unvisited)
    env.close()
    print(f"{files.frames} frames: {files.video}")
    print(f"GIF: {files.gif}")
    print(f"unvisited poses ({files.unvisited}): {files.panel}")


def _tour(args: argparse.Namespace) -> None:
    import gymnasium as gym
    import numpy as np

    import gqn_env  # noqa: F401  (registers the ids)
    from gqn_env.wrappers.imagination import scene_tour

    env = gym.make(args.env_id, image_size=args.image_size, map_size=256)
    tour = scene_tour(env, args.seed, args.frames, args.out)
    env.close()
    print(f"start pose [x, z, yaw, pitch] = {np.round(tour['pose'], 3).tolist()}")
    print(f"wrote {tour['views']} ({args.frames} views) and {tour['map']}")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows every option's default."""


IMAGINE_HELP = """Watch what the GQN world model imagines while an agent walks through a maze.

Rolls out an exploring agent in a GQNMaze env (GQNMaze-S3-v0 by default; the
bundled world model unless --checkpoint is given) and writes:

* imagination.mp4 and imagination.gif: each frame shows the true view, the
  view the model imagines for the same pose from the frames seen so far, and the map;
* unvisited.png: true and imagined views from poses the agent never stood near."""


def plain_text(rst: str) -> str:
    """A reStructuredText docstring as plain text for ``--help``: no ````literal```` quotes or ``::`` markers."""
    return rst.replace("``", "").replace("::\n", ":\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``gqn-gym`` and ``python -m gqn_env.cli``."""
    parser = argparse.ArgumentParser(
        prog="gqn-gym", description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
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
    p.add_argument(
        "--top-down",
        action="store_true",
        help="end each scene with its top-down view (for training with --set top_down_fraction=...)",
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
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget once the model is built; warm-up and collection included",
    )
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
    p.add_argument(
        "--frame-skip",
        type=int,
        default=4,
        help="keep every n-th frame of a collected walk (1 keeps every frame: contexts up to the walk's length)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--backend", choices=["gloo", "nccl"], default=None, help="under torchrun (default: nccl with CUDA, else gloo)"
    )
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="strip optimizer state from a checkpoint, for acting (e.g. bundling)")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "add-map",
        help="add a map head to a trained model (train it with --set freeze_representation=true top_down_fraction=...)",
    )
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--channels", type=int, default=64, help="channels of the map head (ModelConfig.map_channels)")
    p.add_argument("--seed", type=int, default=0, help="seed of the map head's initial weights")
    p.add_argument(
        "--layout",
        choices=["vector", "grid", "coverage"],
        default="vector",
        help="ModelConfig.map_layout: a vector, a floor grid, or a floor grid with view counts",
    )
    p.add_argument(
        "--replace", action="store_true", help="if the model has a map head, drop it and put the new one in its place"
    )
    p.set_defaults(func=_add_map)

    for name, help_text in (
        ("add-count", "tell a trained model's generator how many views r stands for"),
        (
            "add-coverage",
            "turn a grid map head into a coverage one: the generator reads each floor cell's mean over "
            "the views that saw it and how many did",
        ),
    ):
        train_hint = "train it with --set context_draw_max=... freeze_representation=true"
        p = sub.add_parser(name, help=f"{help_text} ({train_hint})")
        p.add_argument("checkpoint")
        p.add_argument("out")
        p.set_defaults(func=_widen)

    minimums = {}  # per command: option -> least value, checked after parsing
    for name, help_text in (
        ("imagine", "roll out an agent in GQNMaze and write the imagination video"),
        ("demo", "the README's demo: the bundled model, a rollout, a video"),
    ):
        p = sub.add_parser(name, help=help_text, description=IMAGINE_HELP, formatter_class=_HelpFormatter)
        p.add_argument("--env-id", default="GQNMaze-S3-v0", help="a GQNMaze id")
        p.add_argument("--checkpoint", default=None, help="a world-model checkpoint; without it, the bundled model")
        p.add_argument("--steps", type=int, default=150, help="agent steps to roll out (>= 1)")
        p.add_argument("--seed", type=int, default=0, help="scene and policy seed")
        p.add_argument("--policy", choices=["random", "explorer"], default="explorer", help="the walking agent")
        p.add_argument("--fps", type=int, default=10, help="frames per second of the video (>= 1)")
        p.add_argument("--unvisited", type=int, default=6, help="imagined views from unvisited poses (>= 0)")
        p.add_argument("--out", type=Path, default=Path("outputs/imagine"), help="output folder")
        p.set_defaults(func=_imagine)
        minimums[name] = (p, {"steps": 1, "fps": 1, "unvisited": 0})

    p = sub.add_parser(
        "tour",
        help="render frames and the top-down map of a scene",
        description="Render a GQN maze scene: a few egocentric frames and the top-down map, as PNG files.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--env-id", default="GQNMazeScene-S3-v0", help="a GQNMazeScene id")
    p.add_argument("--seed", type=int, default=0, help="scene seed")
    p.add_argument("--frames", type=int, default=8, help="egocentric views to render (>= 1)")
    p.add_argument("--image-size", type=int, default=64, help="side of each view in pixels")
    p.add_argument("--out", type=Path, default=Path("outputs/scene_tour"), help="output folder")
    p.set_defaults(func=_tour)
    minimums["tour"] = (p, {"frames": 1})

    args = parser.parse_args(argv)
    command_parser, least = minimums.get(args.command, (None, {}))
    for name, low in least.items():
        if getattr(args, name) < low:
            command_parser.exit(
                2, f"{command_parser.prog}: error: --{name} must be >= {low}, got {getattr(args, name)}\n"
            )
    args.func(args)


if __name__ == "__main__":
    main()
