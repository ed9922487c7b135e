"""Distributed training: two real CPU processes under torchrun (gloo on loopback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.world_model.conftest import fill_buffer
from world_model import GQNConfig, SceneBuffer, SceneStore, Trainer, load_checkpoint
from world_model.distributed import local_batch_size, rank_seed

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ...`` on loopback, one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def store_path(tmp_path, tiny_config) -> Path:
    path = tmp_path / "frames.gqnstore"
    fill_buffer(tiny_config, scenes=8, frames=10).save_to(path)
    return path


def shard(store_path: Path, rank: int, world: int) -> SceneBuffer:
    store = SceneStore(store_path)
    buffer = SceneBuffer(store.image_size, max_scenes=100, seed=rank)
    store.load_into(buffer, shard=(rank, world))
    return buffer


def reference_run(store_path: Path, config: GQNConfig, steps: int) -> tuple[dict, list[float]]:
    """One process, the same global batch: both ranks' local batches, mean loss, one Adam step."""
    world = 2
    local = config.replace(batch_size=local_batch_size(config.batch_size, world))
    trainer = Trainer(local, shard(store_path, 0, world))
    shards = [shard(store_path, r, world) for r in range(world)]
    rngs = [
        (np.random.default_rng(rank_seed(config.seed, r)), torch.Generator().manual_seed(rank_seed(config.seed, r)))
        for r in range(world)
    ]
    losses = []
    for _ in range(steps):
        for group in trainer.optimizer.param_groups:
            group["lr"] = trainer.lr
        per_rank = []
        for r in range(world):
            trainer.sampler, (trainer.np_rng, trainer.torch_rng) = shards[r], rngs[r]
            per_rank.append(trainer._forward(trainer.sample_batch(), trainer.sigma)["loss"])
        loss = torch.stack(per_rank).mean()
        trainer.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), config.grad_clip)
        trainer.optimizer.step()
        trainer.step_count += 1
        losses.append(float(loss.detach()))
    return trainer.model.state_dict(), losses


def test_two_ranks_agree_with_each_other_and_with_one_process(tmp_path, store_path):
    steps = 3
    torchrun(str(WORKER), "--store", str(store_path), "--out", str(tmp_path), "--steps", str(steps))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    config = GQNConfig.tiny()
    assert ranks[0]["local_batch"] == ranks[1]["local_batch"] == config.batch_size // 2
    for name, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][name]), f"ranks differ in {name}"
    assert ranks[0]["losses"] == ranks[1]["losses"]

    ref_weights, ref_losses = reference_run(store_path, config, steps)
    np.testing.assert_allclose(ranks[0]["losses"], ref_losses, rtol=1e-5)
    initial = Trainer(config, shard(store_path, 0, 2)).model.state_dict()
    moved = 0
    for name, value in ranks[0]["weights"].items():
        torch.testing.assert_close(value, ref_weights[name], rtol=1e-4, atol=1e-6, msg=f"{name} differs")
        moved += int(not torch.equal(value, initial[name]))
    assert moved > 0.8 * len(initial), "training should change most tensors"


def test_torchrun_store_training_checkpoints_and_resumes(tmp_path, store_path):
    # The store-only command of docs/scaling.md (it replaced `-m world_model.distributed`).
    ckpt = tmp_path / "ddp.pt"
    common = ["-m", "gqn_env.cli", "train", "--store", str(store_path), "--offline", "--preset", "tiny"]
    common += ["--checkpoint", str(ckpt), "--resume", "--checkpoint-every", "0", "--threads", "1", "--no-progress"]
    first = torchrun(*common, "--steps", "4")
    assert "world size 2, backend gloo" in first.stdout
    data = load_checkpoint(ckpt)
    assert data["step"] == 4 and data["extra"]["world_size"] == 2
    assert GQNConfig.from_dict(data["config"]).batch_size == GQNConfig.tiny().batch_size  # the global batch
    second = torchrun(*common, "--steps", "6")
    assert "step 4 -> 6" in second.stdout
    resumed = load_checkpoint(ckpt)
    assert resumed["step"] == 6
    assert any(not torch.equal(resumed["model"][k], data["model"][k]) for k in data["model"])


def test_store_shards_are_disjoint_and_complete(store_path):
    full = shard(store_path, 0, 1)
    parts = [shard(store_path, r, 3) for r in range(3)]
    ids = [set(p.scene_ids()) for p in parts]
    assert set().union(*ids) == set(full.scene_ids())
    assert sum(len(i) for i in ids) == len(full.scene_ids())
    with pytest.raises(ValueError, match="shard"):
        SceneStore(store_path).load_into(SceneBuffer(full.image_size), shard=(3, 3))


def test_scenes_per_rank_rounds_up_and_rejects_nonsense():
    from world_model.distributed import scenes_per_rank

    assert [scenes_per_rank(4000, w) for w in (1, 2, 3, 7)] == [4000, 2000, 1334, 572]
    with pytest.raises(ValueError):
        scenes_per_rank(0, 2)
