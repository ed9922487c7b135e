"""The forward-prediction auxiliary loss: its training pairs, and that it trains the extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.auxiliary import ForwardPrediction, transition_pairs
from agents.rl import make_agent, make_vec_env
from world_model import GQN, GQNConfig

TINY_SCENE = {"num_rows": 1, "num_cols": 2, "max_episode_steps": 12, "map_size": 32, "image_size": 16}


def test_transition_pairs_never_cross_an_episode_boundary():
    starts = np.array(
        [
            [1, 1],
            [0, 0],
            [1, 0],  # env 0's episode ended at step 1
            [0, 1],  # env 1's ended at step 2
        ]
    )
    t, env = transition_pairs(starts)
    assert sorted(zip(t.tolist(), env.tolist(), strict=True)) == [(0, 0), (0, 1), (1, 1), (2, 0)]
    with pytest.raises(ValueError, match="T, n_envs"):
        transition_pairs(np.zeros(4))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="epochs"):
        ForwardPrediction(epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        ForwardPrediction(learning_rate=-1.0)


def _agent(obs_keys, seed=0):
    torch.manual_seed(seed)
    venv = make_vec_env("gqn", "GQNMazeScene-v0", 2, seed, GQN(GQNConfig.tiny()), {**TINY_SCENE, "obs_keys": obs_keys})
    return make_agent("gqn", venv, {"n_steps": 64, "batch_size": 64, "n_epochs": 1}, seed=seed)


def test_an_observation_without_the_target_key_is_refused():
    agent = _agent(("patches", "viewpoint"))
    with pytest.raises(ValueError, match="view_encoding"):
        agent.learn(64, callback=ForwardPrediction())
    agent.get_env().close()


@pytest.mark.slow
def test_forward_prediction_trains_the_shared_extractor_and_its_loss_falls():
    agent = _agent(("patches", "view_encoding", "viewpoint"))
    extractor = agent.policy.pi_features_extractor
    assert extractor is agent.policy.vf_features_extractor  # shared: the auxiliary loss shapes both heads' input
    aux = ForwardPrediction(epochs=8, batch_size=32, learning_rate=1e-3)
    # Only the auxiliary loss may move the extractor here: PPO's own update is switched off.
    agent.learning_rate = 0.0
    agent.lr_schedule = lambda _: 0.0
    before = {k: v.clone() for k, v in extractor.state_dict().items()}
    agent.learn(64 * 2 * 6, callback=aux)
    assert len(aux.losses) == 6  # one per rollout
    assert any(not torch.equal(v, before[k]) for k, v in extractor.state_dict().items())
    # Each entry is the first epoch's loss on a fresh rollout: prediction on unseen steps improves.
    assert np.mean(aux.losses[-2:]) < 0.7 * aux.losses[0], aux.losses
    agent.get_env().close()
