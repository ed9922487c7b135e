"""Train a PPO agent on the GQN representation (or on raw pixels) and save it with its world model.

Usage::

    python examples/train_agent.py --obs gqn --steps 50000 --out runs/agent_gqn
    python examples/train_agent.py --obs gqn_online --steps 50000 --out runs/agent_online
    python examples/train_agent.py --obs pixels --steps 50000 --out runs/agent_pixels
    python examples/train_agent.py --load runs/agent_gqn --episodes 10      # evaluate a saved agent
    tensorboard --logdir runs/agent_gqn/tb

``gqn``: GQNMaze with the bundled world model, frozen. ``gqn_online``: a world
model trained from scratch, during RL, on the agent's own frames
(:class:`agents.rl.WorldModelCallback`: updates between rollouts only, see its
docstring). ``pixels``: the 64x64 egocentric image with 4 stacked frames.
Success is logged as ``rollout/success_rate`` (SB3 reads ``is_success``).
The policy is saved as ``policy.zip`` with the world model it was trained with
beside it (``world_model.pt``), and ``--load`` rebuilds that pair.
"""

from __future__ import annotations

import argparse

import numpy as np
from stable_baselines3 import PPO

import gqn_env  # noqa: F401
from agents.rl import SuccessCurve, WorldModelCallback, load_agent, make_vec_env, save_agent
from gqn_env.envs.gqn_maze import load_world_model
from world_model import GQNConfig, SceneBuffer, Trainer


def train(args: argparse.Namespace) -> None:
    scene = {"max_episode_steps": args.episode_steps}
    callbacks: list = [SuccessCurve()]
    model = None
    if args.obs == "gqn_online":
        trainer = Trainer(GQNConfig.cpu().replace(seed=args.seed), SceneBuffer(image_size=32, max_scenes=2000))
        model = trainer.model
        callbacks.append(WorldModelCallback(trainer, trainer.sampler, updates_per_rollout=args.wm_updates))
    elif args.obs == "gqn":
        model = load_world_model(args.checkpoint)
    if args.obs == "pixels":
        scene["image_size"] = 64
    venv = make_vec_env(args.obs, args.env_id, args.num_envs, args.seed, model, scene)
    policy = "CnnPolicy" if args.obs == "pixels" else "MultiInputPolicy"
    agent = PPO(
        policy, venv, n_steps=256, batch_size=256, n_epochs=4, seed=args.seed, device="cpu",
        tensorboard_log=f"{args.out}/tb", verbose=1,
    )  # fmt: skip
    agent.learn(args.steps, callback=callbacks)
    venv.close()
    out = save_agent(agent, args.out, model)
    rate = np.mean(callbacks[0].successes[-50:]) if callbacks[0].successes else float("nan")
    print(f"saved {out}/policy.zip" + (" and world_model.pt" if model is not None else ""))
    print(f"success rate over the last {min(50, len(callbacks[0].successes))} training episodes: {rate:.2f}")


def evaluate(args: argparse.Namespace) -> None:
    agent, model = load_agent(args.load)
    obs_type = "pixels" if model is None else "gqn"
    scene = {"max_episode_steps": args.episode_steps, **({"image_size": 64} if model is None else {})}
    venv = make_vec_env(obs_type, args.env_id, 1, args.seed + 10_000, model, scene)
    successes, obs = [], venv.reset()
    while len(successes) < args.episodes:
        action, _ = agent.predict(obs, deterministic=False)
        obs, _, dones, infos = venv.step(action)
        if dones[0]:
            successes.append(float(infos[0].get("is_success", False)))
    venv.close()
    print(f"{args.load}: success rate {np.mean(successes):.2f} over {len(successes)} episodes on unseen seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", choices=["gqn", "gqn_online", "pixels"], default="gqn")
    parser.add_argument("--env-id", default="GQNMazeScene-S2-v0")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--episode-steps", type=int, default=96)
    parser.add_argument("--wm-updates", type=int, default=8, help="world-model steps per rollout (gqn_online)")
    parser.add_argument("--checkpoint", default=None, help="world model for --obs gqn (default: bundled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/agent")
    parser.add_argument("--load", default=None, help="evaluate the agent saved in this folder instead")
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    evaluate(args) if args.load else train(args)


if __name__ == "__main__":
    main()
