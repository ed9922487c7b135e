"""Train a PPO agent on the GQN representation (or on raw pixels) and save it with its world model.

Usage::

    python examples/train_agent.py --obs gqn --steps 50000 --out runs/agent_gqn
    python examples/train_agent.py --obs gqn_lstm --steps 50000 --out runs/agent_gqn_lstm
    python examples/train_agent.py --obs gqn_online --steps 50000 --out runs/agent_online
    python examples/train_agent.py --obs pixels --steps 50000 --out runs/agent_pixels
    python examples/train_agent.py --obs state_oracle --steps 50000 --out runs/agent_oracle
    python examples/train_agent.py --load runs/agent_gqn --episodes 10      # evaluate a saved agent
    tensorboard --logdir runs/agent_gqn/tb

``gqn``: GQNMaze with the bundled world model, frozen; ``gqn_lstm``: the same
observation read by a recurrent policy (sb3-contrib RecurrentPPO). ``gqn_online``: a world
model trained from scratch, during RL, on the agent's own frames
(:class:`agents.rl.WorldModelCallback`: updates between rollouts only, see its
docstring). ``pixels``: the 64x64 egocentric image with 4 stacked frames;
``pixels_lstm``: one 64x64 frame and a recurrent policy (sb3-contrib);
``state_oracle``: privileged state, a reference (agents/oracle.py).
Every type trains with the same PPO settings (``--ppo``, agents.rl.PPO_SETTINGS);
the defaults (``steady``, 200-step episodes on GQNMazeScene-S2) are the RL benchmark's;
the GQN types read their Dict observation with agents.features.GQNMazeExtractor.
Success is logged as ``rollout/success_rate`` (SB3 reads ``is_success``).
The policy is saved as ``policy.zip`` with the world model it was trained with
beside it (``world_model.pt``), and ``--load`` rebuilds that pair.
"""

from __future__ import annotations

import argparse

import numpy as np

import gqn_env  # noqa: F401
from agents.rl import (
    OBS_TYPES,
    ORACLE_TYPES,
    PIXEL_TYPES,
    PPO_SETTINGS,
    SuccessCurve,
    WorldModelCallback,
    agent_info,
    load_agent,
    make_agent,
    make_vec_env,
    restore_normalization,
    save_agent,
)
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
    elif args.obs in ("gqn", "gqn_lstm"):
        model = load_world_model(args.checkpoint)
    if args.obs in PIXEL_TYPES:
        scene["image_size"] = 64
    elif args.obs not in ORACLE_TYPES and args.gqn_obs:
        scene["obs_keys"] = args.gqn_obs
    venv = make_vec_env(args.obs, args.env_id, args.num_envs, args.seed, model, scene, goal_landmark=args.goal_landmark)
    agent = make_agent(args.obs, venv, args.ppo, seed=args.seed, tensorboard_log=f"{args.out}/tb", verbose=1)
    agent.learn(args.steps, callback=callbacks)
    venv.close()
    out = save_agent(agent, args.out, model, obs_type=args.obs, env_kwargs=scene)
    rate = np.mean(callbacks[0].successes[-50:]) if callbacks[0].successes else float("nan")
    print(f"saved {out}/policy.zip" + (" and world_model.pt" if model is not None else ""))
    print(f"success rate over the last {min(50, len(callbacks[0].successes))} training episodes: {rate:.2f}")


def evaluate(args: argparse.Namespace) -> None:
    agent, model = load_agent(args.load)
    info = agent_info(args.load)
    obs_type = "gqn" if info["obs_type"] == "gqn_online" else info["obs_type"]  # evaluate with the saved weights
    scene = {**info["env_kwargs"], "max_episode_steps": args.episode_steps}
    goal = info.get("goal_landmark", False)
    venv = make_vec_env(obs_type, args.env_id, 1, args.seed + 10_000, model, scene, goal_landmark=goal)
    venv = restore_normalization(venv, args.load)
    successes, obs = [], venv.reset()
    state, starts = None, np.ones(1, dtype=bool)  # a recurrent policy's memory
    while len(successes) < args.episodes:
        action, state = agent.predict(obs, state=state, episode_start=starts, deterministic=False)
        obs, _, dones, infos = venv.step(action)
        starts = dones
        if dones[0]:
            successes.append(float(infos[0].get("is_success", False)))
    venv.close()
    print(f"{args.load}: success rate {np.mean(successes):.2f} over {len(successes)} episodes on unseen seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", choices=OBS_TYPES, default="gqn")
    parser.add_argument("--ppo", choices=sorted(PPO_SETTINGS), default="steady", help="shared PPO settings")
    parser.add_argument("--gqn-obs", nargs="+", default=None, help="GQNMaze observation keys (default: the env's)")
    parser.add_argument(
        "--goal-landmark",
        action="store_true",
        help="gqn, gqn_lstm: read landmarks through agents.goal_landmark (needs --gqn-obs with patches and landmarks)",
    )
    parser.add_argument("--env-id", default="GQNMazeScene-S2-v0")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--episode-steps", type=int, default=200)
    parser.add_argument("--wm-updates", type=int, default=8, help="world-model steps per rollout (gqn_online)")
    parser.add_argument("--checkpoint", default=None, help="world model for --obs gqn and gqn_lstm (default: bundled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/agent")
    parser.add_argument("--load", default=None, help="evaluate the agent saved in this folder instead")
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    evaluate(args) if args.load else train(args)


if __name__ == "__main__":
    main()
