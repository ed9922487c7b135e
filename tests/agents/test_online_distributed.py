"""Online training (collect + train) data-parallel: ``gqn-gym train`` under torchrun, two CPU ranks."""

from __future__ import annotations

import torch

from tests.world_model.test_distributed import torchrun
from world_model import GQNConfig, load_checkpoint


def test_two_ranks_collect_train_checkpoint_and_stop_together(tmp_path):
    ckpt = tmp_path / "online.pt"
    common = ["-m", "gqn_env.cli", "train", "--preset", "tiny", "--checkpoint", str(ckpt)]
    common += ["--env-id", "GQNMazeScene-S2-v0", "--warmup-scenes", "4", "--no-progress"]
    # A wall-clock budget: the ranks' clocks differ, so they must agree on when to stop
    # (and on the checkpoints every 0.5 s) or one would hang in DDP's all-reduce.
    first = torchrun(*common, "--minutes", "0.1", "--checkpoint-every", "0.5", timeout=300)
    assert '"processes": 2' in first.stdout
    data = load_checkpoint(ckpt)
    steps, scenes = data["step"], data["extra"]["next_scene"]
    assert data["extra"]["world_size"] == 2 and steps > 0
    assert GQNConfig.from_dict(data["config"]).batch_size == GQNConfig.tiny().batch_size  # the global batch
    # 4 warm-up scenes, then one more scene per rank every `collect_every * 2` steps
    assert scenes == 4 + 2 * (steps // 8)
    assert data["extra"]["mean_image"].shape == (16, 16, 3)

    second = torchrun(*common, "--resume", "--steps", str(steps + 8), timeout=300)
    assert f"resuming from {ckpt} at step {steps}" in second.stdout
    resumed = load_checkpoint(ckpt)
    assert resumed["step"] == steps + 8
    assert resumed["extra"]["next_scene"] >= scenes + 2  # new scenes, no repeats of the first run's
    assert any(not torch.equal(resumed["model"][k], data["model"][k]) for k in data["model"])
