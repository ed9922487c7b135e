"""The CUDA path: training, checkpoints that cross devices, and CPU/GPU agreement.

Skipped where no GPU is present (CI has none); run on a GPU machine with
``python -m pytest tests/world_model/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.world_model.conftest import random_scenes
from world_model import GQN, Trainer, load_model
from world_model.evaluation import evaluate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def exact_cuda():
    """Full float32 and deterministic kernels, so CPU and GPU results can be compared closely."""
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        matmul = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32 = matmul


def test_cuda_training_checkpoint_loads_on_the_cpu(tiny_config, tiny_buffer, tmp_path):
    trainer = Trainer(tiny_config, tiny_buffer, device="cuda")
    for _ in range(5):
        stats = trainer.step()
    assert np.isfinite(stats["loss"]) and trainer.skipped_steps == 0
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    path = trainer.save(tmp_path / "gpu.pt")
    cpu_model = load_model(path)  # the default device is the CPU
    assert cpu_model.device.type == "cpu"
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(cpu_model.state_dict()[name], value.cpu()), name
    resumed = Trainer.load(path, tiny_buffer, device="cpu")  # GPU optimizer state onto the CPU
    resumed.step()
    assert resumed.step_count == 6


def test_cuda_resume_continues_the_same_steps(tiny_config, tiny_buffer, tmp_path, exact_cuda):
    a = Trainer(tiny_config, tiny_buffer, device="cuda")
    for _ in range(3):
        a.step()
    a.save(tmp_path / "ckpt.pt")
    b = Trainer.load(tmp_path / "ckpt.pt", tiny_buffer, device="cuda")
    for _ in range(3):
        sa, sb = a.step(), b.step()
        assert sa["loss"] == pytest.approx(sb["loss"], rel=1e-6, abs=1e-6)
    for name, value in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[name], value, rtol=1e-6, atol=1e-6)


def test_cpu_and_cuda_give_the_same_predictions_and_evaluation(tiny_config, exact_cuda):
    torch.manual_seed(0)
    cpu_model = GQN(tiny_config).eval()
    gpu_model = GQN(tiny_config).eval().cuda()
    gpu_model.load_state_dict(cpu_model.state_dict())
    scenes = random_scenes(tiny_config, views=(6, 6, 6))
    mean_image = np.full((tiny_config.image_size,) * 2 + (3,), 0.5)
    on_cpu = evaluate(cpu_model, scenes, mean_image)
    on_gpu = evaluate(gpu_model, scenes, mean_image)
    for key, value in on_cpu.items():
        assert on_gpu[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the training pass too, with the same posterior noise drawn on each device
    s = scenes[0]
    args = (s["context_images"][None], s["context_viewpoints"][None], s["query_images"][:1], s["query_viewpoints"][:1])
    with torch.no_grad():
        loss_cpu = cpu_model(*args, sigma=1.0, generator=torch.Generator().manual_seed(1))
        loss_gpu = gpu_model(*args, sigma=1.0, generator=torch.Generator(device="cuda").manual_seed(1))
    # CPU and CUDA generators draw different posterior noise, so only the deterministic
    # part, the scene representation, is compared closely.
    r_cpu = cpu_model.scene_representation(*args[:2])
    r_gpu = gpu_model.scene_representation(*args[:2])
    torch.testing.assert_close(r_gpu.cpu(), r_cpu, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(loss_gpu["loss"]) and loss_gpu["loss"].device.type == "cuda"
    assert torch.isfinite(loss_cpu["loss"])


def test_gqn_maze_encodes_on_cuda_like_on_the_cpu(exact_cuda):
    import gymnasium as gym

    import gqn_env  # noqa: F401  (registers the ids; renders through EGL)

    observations = {}
    for device in ("cpu", "cuda"):
        env = gym.make("GQNMaze-v0", device=device, obs_keys=("representation", "patches", "view_encoding"))
        obs, _ = env.reset(seed=3)
        for _ in range(4):
            obs, *_ = env.step(2)  # move forward
        observations[device] = obs
        env.close()
    for key in ("representation", "patches", "view_encoding"):
        np.testing.assert_allclose(observations["cuda"][key], observations["cpu"][key], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(observations["cuda"]["viewpoint"], observations["cpu"]["viewpoint"])
