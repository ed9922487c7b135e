from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from world_model import GQN, BackgroundTrainer, Trainer
from world_model.trainer import linear_anneal


def test_elbo_decreases_on_fixed_batches(tiny_config, tiny_buffer):
    config = tiny_config.replace(lr_start=3e-3, lr_end=3e-3, sigma_start=0.7, sigma_end=0.7)
    trainer = Trainer(config, tiny_buffer)
    fixed = [tiny_buffer.sample(config.batch_size, np.random.default_rng(i), num_context=3) for i in range(3)]

    def loss():
        with torch.no_grad():
            return np.mean(
                [
                    float(
                        trainer.model(
                            b["context_images"],
                            b["context_viewpoints"],
                            b["query_images"],
                            b["query_viewpoints"],
                            sigma=0.7,
                        )["loss"]
                    )
                    for b in fixed
                ]
            )

    class Fixed:
        i = 0

        def sample(self, batch_size, rng, num_context=None):
            Fixed.i += 1
            return fixed[Fixed.i % 3]

    trainer.sampler = Fixed()
    before = loss()
    for _ in range(60):
        trainer.step()
    after = loss()
    # The Gaussian NLL has a floor (perfect mean) of pixels * (log sigma + log(2 pi) / 2); what
    # lies above it is what training can remove. Require most of it gone.
    floor = 3 * config.image_size**2 * (math.log(0.7) + 0.5 * math.log(2 * math.pi))
    assert after - floor < 0.6 * (before - floor), (before, after, floor)


def test_resume_gives_bit_identical_next_steps(tiny_config, tiny_buffer, tmp_path):
    a = Trainer(tiny_config, tiny_buffer)
    for _ in range(3):
        a.step()
    a.save(tmp_path / "ckpt.pt")
    b = Trainer.load(tmp_path / "ckpt.pt", tiny_buffer)
    assert b.step_count == 3
    for _ in range(2):
        sa, sb = a.step(), b.step()
        assert sa["loss"] == sb["loss"]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_nan_loss_is_skipped_and_weights_unchanged(tiny_config, tiny_buffer):
    trainer = Trainer(tiny_config, tiny_buffer)
    trainer.step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    opt_before = {k: v["exp_avg"].clone() for k, v in trainer.optimizer.state_dict()["state"].items()}
    with torch.no_grad():  # poison the forward pass only through the output layer's bias
        trainer.model.generator.to_image.bias.fill_(float("nan"))
    poisoned = trainer.model.generator.to_image.bias.clone()
    stats = trainer.step()
    assert stats["skipped"] == 1.0 and trainer.skipped_steps == 1
    after = trainer.model.state_dict()
    for k, v in before.items():
        if k != "generator.to_image.bias":
            assert torch.equal(after[k], v), k
    assert torch.equal(after["generator.to_image.bias"].isnan(), poisoned.isnan())
    for k, v in trainer.optimizer.state_dict()["state"].items():
        assert torch.equal(v["exp_avg"], opt_before[k])


def test_annealing_schedules_hit_their_endpoints(tiny_config, tiny_buffer):
    assert linear_anneal(2.0, 0.7, 100, 0) == 2.0
    assert linear_anneal(2.0, 0.7, 100, 50) == pytest.approx(1.35)
    assert linear_anneal(2.0, 0.7, 100, 100) == pytest.approx(0.7)
    assert linear_anneal(2.0, 0.7, 100, 10_000) == 0.7
    trainer = Trainer(tiny_config, tiny_buffer)
    assert trainer.sigma == tiny_config.sigma_start and trainer.lr == tiny_config.lr_start
    trainer.step_count = tiny_config.lr_anneal_steps
    assert trainer.sigma == tiny_config.sigma_end and trainer.lr == pytest.approx(tiny_config.lr_end)


def test_background_trainer_publishes_new_weights(tiny_config, tiny_buffer):
    trainer = Trainer(tiny_config, tiny_buffer)
    acting = GQN(tiny_config)
    with BackgroundTrainer(trainer, publish_every=2) as worker:
        while trainer.step_count < 6:
            pass
        version = worker.copy_weights_to(acting)
    assert version >= 2
    worker.copy_weights_to(acting)  # the final publish after stop()
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(acting.state_dict()[k], v)


def test_tensorboard_logging_writes_events(tiny_config, tiny_buffer, tmp_path):
    pytest.importorskip("tensorboard")
    trainer = Trainer(tiny_config, tiny_buffer, log_dir=tmp_path, image_every=1)
    trainer.step()
    trainer._writer.flush()
    assert any(p.name.startswith("events.out") for p in tmp_path.iterdir())
