"""An auxiliary loss for a PPO agent's features extractor: predict the next observation.

PPO trains the features extractor from the policy and value losses alone, a sparse
signal when rewards are rare. :class:`ForwardPrediction` adds a dense one: after each
rollout, a small head on the extractor's features of an observation and the action
taken predicts one key of the *next* observation of the same episode (by default the
world model's encoding of the next frame, ``view_encoding``), and the extractor and
the head take a few gradient steps on its mean squared error. Every transition of a
rollout is a training pair, so the extractor learns how the agent's actions change
what it sees (the latent forward models of SPR, Schwarzer et al. 2021, and the
auxiliary tasks of UNREAL, Jaderberg et al. 2017, are in this family), while PPO's
own update is left as it is.

Targets are read from the rollout buffer as the policy saw them, so with
``VecNormalize`` they are standardised by its running statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn


def transition_pairs(episode_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(t, env)`` of a rollout's steps whose next step is in the same episode.

    ``episode_starts`` is the rollout buffer's ``(T, n_envs)`` array: 1 where the
    observation stored at that step is the first of an episode. A step ``t < T - 1``
    pairs with ``t + 1`` unless ``t + 1`` starts an episode (the step before ended one).
    """
    starts = np.asarray(episode_starts)
    if starts.ndim != 2:
        raise ValueError(f"episode_starts must be (T, n_envs), got shape {starts.shape}")
    continues = starts[1:] == 0  # (T - 1, n_envs)
    t, env = np.nonzero(continues)
    return t, env


class ForwardPrediction(BaseCallback):
    """After each rollout, train the policy's features extractor to predict the next observation's ``target`` key.

    Args:
        target: The Dict observation key to predict (a vector key).
        coef: Weight of the mean squared error in the auxiliary loss.
        epochs: Passes over the rollout's transitions after each rollout.
        batch_size: Transitions per gradient step.
        learning_rate: Adam's learning rate for the extractor and the prediction head
            (its own optimiser, beside PPO's).
        hidden: Width of the prediction head's hidden layer.

    After training, ``losses`` holds the mean loss of each rollout's first epoch (before
    that rollout's steps), so a falling list shows the prediction improving on unseen data.
    """

    def __init__(
        self,
        target: str = "view_encoding",
        coef: float = 1.0,
        epochs: int = 4,
        batch_size: int = 256,
        learning_rate: float = 3e-4,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        for name, value in (("coef", coef), ("epochs", epochs), ("batch_size", batch_size), ("hidden", hidden)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        self.target = target
        self.coef = float(coef)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.hidden = int(hidden)
        self.losses: list[float] = []
        self.head: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._rng = np.random.default_rng(0)

    def _on_training_start(self) -> None:
        policy = self.model.policy
        space = self.model.observation_space
        if not hasattr(space, "spaces") or self.target not in space.spaces:
            raise ValueError(f"ForwardPrediction needs a Dict observation with the key {self.target!r}, got {space}")
        if len(space[self.target].shape) != 1:
            raise ValueError(f"ForwardPrediction's target must be a vector key, got shape {space[self.target].shape}")
        if not hasattr(self.model.action_space, "n"):
            raise ValueError(f"ForwardPrediction needs a Discrete action space, got {self.model.action_space}")
        self._actions = int(self.model.action_space.n)
        extractor = policy.pi_features_extractor
        width = extractor.features_dim + self._actions
        self.head = nn.Sequential(
            nn.Linear(width, self.hidden), nn.ReLU(), nn.Linear(self.hidden, space[self.target].shape[0])
        ).to(policy.device)
        self.optimizer = torch.optim.Adam([*extractor.parameters(), *self.head.parameters()], lr=self.learning_rate)
        self._rng = np.random.default_rng(self.model.seed)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        if not isinstance(buffer, DictRolloutBuffer):
            raise ValueError("ForwardPrediction needs a Dict observation space (a DictRolloutBuffer)")
        t, env = transition_pairs(buffer.episode_starts)
        if len(t) == 0:
            return
        policy = self.model.policy
        device = policy.device
        obs = {k: torch.as_tensor(v[t, env], device=device) for k, v in buffer.observations.items()}
        targets = torch.as_tensor(buffer.observations[self.target][t + 1, env], device=device)
        actions = torch.as_tensor(buffer.actions[t, env].reshape(-1).astype(np.int64), device=device)
        one_hot = nn.functional.one_hot(actions, self._actions).float()
        policy.set_training_mode(True)
        for epoch in range(self.epochs):
            order = self._rng.permutation(len(t))
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                idx = torch.as_tensor(order[start : start + self.batch_size], device=device)
                features = policy.extract_features({k: v[idx] for k, v in obs.items()}, policy.pi_features_extractor)
                prediction = self.head(torch.cat([features, one_hot[idx]], dim=1))
                loss = self.coef * nn.functional.mse_loss(prediction, targets[idx])
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.model.max_grad_norm)
                self.optimizer.step()
                total += loss.item() * len(idx)
            if epoch == 0:
                self.losses.append(total / len(order))
        policy.set_training_mode(False)
        self.logger.record("auxiliary/forward_loss", self.losses[-1])
