from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from world_model import GQN, BackgroundTrainer, CheckpointError, SceneBuffer, Trainer
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


def test_resume_with_new_schedules_keeps_the_weights_and_refuses_another_architecture(
    tiny_config, tiny_buffer, tmp_path
):
    a = Trainer(tiny_config, tiny_buffer)
    for _ in range(3):
        a.step()
    a.save(tmp_path / "ckpt.pt")
    longer = tiny_config.replace(lr_anneal_steps=10 * tiny_config.lr_anneal_steps, context_min=2)
    b = Trainer.load(tmp_path / "ckpt.pt", tiny_buffer, config=longer)
    assert b.step_count == 3 and b.config == longer and b.lr > a.lr
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    with pytest.raises(CheckpointError, match="num_layers"):
        Trainer.load(tmp_path / "ckpt.pt", tiny_buffer, config=tiny_config.replace(num_layers=3))


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
        deadline = time.monotonic() + 60
        while trainer.step_count < 6 and time.monotonic() < deadline:
            time.sleep(0.01)  # poll without holding the GIL
        assert trainer.step_count >= 6
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


class PlainSampler:
    """A sampler with only ``sample(batch_size, rng)``: always K = k views of random scenes."""

    def __init__(self, config, k):
        self.config, self.k = config, k

    def sample(self, batch_size, rng):
        s, d = self.config.image_size, self.config.viewpoint_dim
        return {
            "context_images": rng.integers(0, 256, (batch_size, self.k, s, s, 3), dtype=np.uint8),
            "context_viewpoints": rng.uniform(-1, 1, (batch_size, self.k, d)).astype(np.float32),
            "query_images": rng.integers(0, 256, (batch_size, s, s, 3), dtype=np.uint8),
            "query_viewpoints": rng.uniform(-1, 1, (batch_size, d)).astype(np.float32),
        }


def test_plain_sampler_batches_are_cut_to_the_context_range(tiny_config):
    config = tiny_config.replace(context_min=2, context_max=3)
    trainer = Trainer(config, PlainSampler(config, k=7))
    seen = set()
    for _ in range(20):
        batch = trainer.sample_batch()
        k = batch["context_images"].shape[1]
        assert batch["context_viewpoints"].shape[:2] == (config.batch_size, k)
        seen.add(k)
    assert seen == {2, 3}
    stats = trainer.step()
    assert trainer.step_count == 1 and math.isfinite(stats["loss"]) and stats["queries_per_s"] > 0


def test_cut_context_keeps_image_viewpoint_pairs(tiny_config):
    config = tiny_config.replace(context_min=2, context_max=2)
    sampler = PlainSampler(config, k=5)
    full = sampler.sample(config.batch_size, np.random.default_rng(0))
    # Tag every view: image value = 10 * view index, viewpoint[0] = view index.
    full["context_images"][:] = (10 * np.arange(5))[None, :, None, None, None].astype(np.uint8)
    full["context_viewpoints"][..., 0] = np.arange(5)[None, :]
    sampler.sample = lambda batch_size, rng: {k: v.copy() for k, v in full.items()}
    batch = Trainer(config, sampler).sample_batch()
    views = batch["context_viewpoints"][..., 0].astype(int)  # (B, 2)
    assert np.array_equal(batch["context_images"][:, :, 0, 0, 0], 10 * views)
    assert all(len(set(row)) == 2 for row in views.tolist())  # distinct views per item


def test_too_few_context_views_raise_and_leave_weights_alone(tiny_config):
    config = tiny_config.replace(context_min=3, context_max=3)
    trainer = Trainer(config, PlainSampler(config, k=2))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ValueError, match="K = 2"):
        trainer.step()
    assert trainer.step_count == 0
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k])


def test_non_finite_gradient_is_skipped_with_weights_and_optimizer_unchanged(tiny_config):
    trainer = Trainer(tiny_config, PlainSampler(tiny_config, k=2))
    trainer.step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    adam_before = {k: {n: t.clone() for n, t in v.items()} for k, v in trainer.optimizer.state_dict()["state"].items()}
    param = trainer.model.generator.prior.weight
    hook = param.register_hook(lambda grad: grad * float("inf"))
    stats = trainer.step()
    hook.remove()
    assert math.isfinite(stats["loss"]) and stats["skipped"] == 1.0 and trainer.skipped_steps == 1
    assert trainer.step_count == 2
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in trainer.optimizer.state_dict()["state"].items():
        for n, t in v.items():
            assert torch.equal(t, adam_before[k][n]), (k, n)
    assert trainer.step()["skipped"] == 0.0  # training goes on
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_train_runs_a_number_of_steps_or_a_time_budget(tiny_config):
    trainer = Trainer(tiny_config, PlainSampler(tiny_config, k=2))
    stats = trainer.train(num_steps=3, progress=False)
    assert trainer.step_count == 3 and {"loss", "kl", "nll", "mse", "psnr", "sigma", "lr"} <= set(stats)
    trainer.train(seconds=0.0, progress=False)
    assert trainer.step_count == 3
    with pytest.raises(ValueError):
        trainer.train(progress=False)


def test_background_trainer_surfaces_worker_errors(tiny_config):
    class Failing(PlainSampler):
        def sample(self, batch_size, rng):
            raise ValueError("buffer is empty")

    worker = BackgroundTrainer(Trainer(tiny_config, Failing(tiny_config, k=2))).start()
    worker._thread.join(timeout=30)
    with pytest.raises(RuntimeError, match="background trainer failed") as info:
        worker.stop()
    assert "buffer is empty" in str(info.value.__cause__)


def test_noise_generator_of_another_device_type_is_reseeded_deterministically(tiny_config, tiny_buffer, tmp_path):
    # What a CUDA checkpoint looks like to a CPU resume: a 16-byte generator state marked "cuda".
    trainer = Trainer(tiny_config, tiny_buffer)
    trainer.step()
    data = trainer.state()
    data["torch_rng"], data["torch_rng_device"] = torch.arange(16, dtype=torch.uint8), "cuda"
    draws = []
    for _ in range(2):
        other = Trainer(tiny_config, tiny_buffer)
        other.load_state(data)
        assert other.step_count == 1
        draws.append(torch.randn(4, generator=other.torch_rng))
    torch.testing.assert_close(draws[0], draws[1])  # the same reseed each time
    fresh = Trainer(tiny_config, tiny_buffer)
    assert not torch.equal(draws[0], torch.randn(4, generator=fresh.torch_rng))


def test_top_down_fraction_makes_top_down_queries_and_is_validated(tiny_config, tiny_buffer):
    from world_model.frames import TOP_DOWN_VIEWPOINT, is_top_down

    s = tiny_config.image_size
    for scene in tiny_buffer.scene_ids():
        tiny_buffer.add(scene, np.full((s, s, 3), 9, dtype=np.uint8), TOP_DOWN_VIEWPOINT)
    trainer = Trainer(tiny_config.replace(top_down_fraction=1.0), tiny_buffer)
    batch = trainer.sample_batch()
    assert is_top_down(batch["query_viewpoints"]).all() and not is_top_down(batch["context_viewpoints"]).any()
    assert math.isfinite(trainer.step()["loss"])
    plain = Trainer(tiny_config, tiny_buffer).sample_batch()
    assert not is_top_down(plain["query_viewpoints"]).any()
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="top_down_fraction"):
            tiny_config.replace(top_down_fraction=bad)


def test_freeze_representation_trains_the_generator_only(tiny_config, tiny_buffer, tmp_path):
    a = Trainer(tiny_config, tiny_buffer)
    a.step()
    a.save(tmp_path / "ckpt.pt")
    frozen = tiny_config.replace(freeze_representation=True)
    # The saved optimizer state covers every tensor; this run trains fewer: a clear refusal, not a crash.
    with pytest.raises(CheckpointError, match="freeze_representation"):
        Trainer.load(tmp_path / "ckpt.pt", tiny_buffer, config=frozen)
    b = Trainer(frozen, tiny_buffer)
    b.model.load_state_dict(a.model.state_dict())
    before = {k: v.clone() for k, v in b.model.state_dict().items()}
    for _ in range(3):
        b.step()
    after = b.model.state_dict()
    rep = [k for k in before if k.startswith("representation.")]
    assert rep and all(torch.equal(before[k], after[k]) for k in rep)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("generator."))
    with pytest.raises(ValueError, match="freeze_representation"):
        tiny_config.replace(freeze_representation="yes")


def test_window_context_selection_reaches_the_sampler_and_is_validated(tiny_config, tiny_buffer):
    s, d = tiny_config.image_size, tiny_config.viewpoint_dim
    ordered = SceneBuffer(image_size=s, viewpoint_dim=d)
    for scene in range(3):
        viewpoints = np.zeros((10, d), dtype=np.float32)
        viewpoints[:, 1] = np.arange(10)  # each frame's index, to read back from the batch
        ordered.add_batch(np.full(10, scene), np.full((10, s, s, 3), 40 * scene, dtype=np.uint8), viewpoints)
    trainer = Trainer(tiny_config.replace(context_max=6, context_selection="window"), ordered)
    for _ in range(20):
        index = trainer.sample_batch()["context_viewpoints"][..., 1]  # (B, K): the frame indices
        assert np.all(np.diff(index, axis=1) == 1)  # consecutive frames in every item
    assert math.isfinite(trainer.step()["loss"])

    class Unordered:  # draws its own frames: it cannot honour a window
        def sample(self, batch_size, rng):
            return tiny_buffer.sample(batch_size, rng)

    with pytest.raises(ValueError, match="context_selection"):
        Trainer(tiny_config.replace(context_selection="window"), Unordered()).sample_batch()
    with pytest.raises(ValueError, match="context_selection"):
        tiny_config.replace(context_selection="nearest")


def test_log_uniform_context_sampling_reaches_the_sampler_and_is_validated(tiny_config, tiny_buffer):
    config = tiny_config.replace(context_max=12, context_sampling="log_uniform")
    trainer = Trainer(config, tiny_buffer)
    ks = [trainer.sample_batch()["context_images"].shape[1] for _ in range(200)]
    assert min(ks) == 1 and max(ks) <= 12 and np.median(ks) < 6.5  # uniform over 1..12 has median 6.5
    assert math.isfinite(trainer.step()["loss"])

    class Plain:  # takes num_context but knows nothing of context_sampling
        def sample(self, batch_size, rng, num_context=None):
            return tiny_buffer.sample(batch_size, rng, num_context=num_context)

    with pytest.raises(ValueError, match="context_sampling"):
        Trainer(config, Plain()).sample_batch()
    with pytest.raises(ValueError, match="context_sampling"):
        tiny_config.replace(context_sampling="cubic")
