from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from world_model import GQN, CheckpointError, GQNConfig, Trainer, load_checkpoint, load_model, save_checkpoint
from world_model.checkpoint import LATER_MODEL_DEFAULTS, load_weights, migrate_config


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_model_from_checkpoint_alone(tiny_config, tiny_buffer, tmp_path):
    trainer = Trainer(tiny_config, tiny_buffer)
    trainer.step()
    path = trainer.save(tmp_path / "a.pt")
    model = load_model(path)
    assert not model.training and model.config == tiny_config
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_checkpoint_from_another_config_is_refused_and_weights_kept(tiny_config, tiny_buffer, tmp_path):
    other = Trainer(tiny_config.replace(hidden_channels=12), tiny_buffer)
    other.save(tmp_path / "other.pt")
    trainer = Trainer(tiny_config, tiny_buffer)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(CheckpointError, match="hidden_channels"):
        trainer.load_state(load_checkpoint(tmp_path / "other.pt"))
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("cut", [0.0, 0.3, 0.9])
def test_truncated_checkpoint_raises_a_clear_error(tiny_config, tiny_buffer, tmp_path, cut):
    path = Trainer(tiny_config, tiny_buffer).save(tmp_path / "c.pt")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match="is empty" if cut == 0 else "not a readable checkpoint"):
        load_model(path)


def test_garbage_and_foreign_files_raise(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match=r"g.pt is not a checkpoint: torch.save writes a zip archive"):
        load_checkpoint(tmp_path / "g.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="not a gqn-gym checkpoint"):
        load_checkpoint(tmp_path / "f.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickled_code_is_never_executed(tiny_config, tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "format": "gqn-gym-checkpoint",
            "version": 1,
            "config": tiny_config.to_dict(),
            "model": GQN(tiny_config).state_dict(),
            "payload": Evil(),
        },
        path,
    )
    with pytest.raises(CheckpointError, match="holding code"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


def test_a_version_1_checkpoint_loads_with_a_warning_that_it_is_unchecked(tiny_config, tmp_path):
    path = tmp_path / "v1.pt"
    model = GQN(tiny_config)
    torch.save(
        {"format": "gqn-gym-checkpoint", "version": 1, "config": tiny_config.to_dict(), "model": model.state_dict()},
        path,
    )
    with pytest.warns(UserWarning, match="no checksum"):
        loaded = load_model(path)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_save_is_atomic_when_writing_fails(tiny_config, tiny_buffer, tmp_path):
    path = Trainer(tiny_config, tiny_buffer).save(tmp_path / "d.pt")
    good = path.read_bytes()
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        save_checkpoint(path, {"config": tiny_config.to_dict(), "model": {}, "bad": lambda: 0})
    assert path.read_bytes() == good
    assert not list(tmp_path.glob(".*tmp"))


def test_keyword_save_and_load_weights_into_an_existing_model(tiny_config, tmp_path):
    source = GQN(tiny_config.replace(seed=5))
    optimizer = torch.optim.Adam(source.parameters())
    path = save_checkpoint(tmp_path / "k.pt", model=source, optimizer=optimizer, step=7, extra={"note": "x"})
    data = load_checkpoint(path)
    assert data["step"] == 7 and data["extra"] == {"note": "x"} and data["config"] == source.config.to_dict()
    target = GQN(tiny_config)
    assert any(not torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
    load_weights(target, path)
    for k, v in target.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k
    with pytest.raises(ValueError, match="needs 'model'"):
        save_checkpoint(tmp_path / "none.pt", config=tiny_config)


def test_load_weights_from_another_config_is_refused_and_weights_kept(tiny_config, tmp_path):
    path = save_checkpoint(tmp_path / "o.pt", model=GQN(tiny_config.replace(z_channels=3, num_layers=3)))
    model = GQN(tiny_config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"z_channels': \(3, 2\).*|num_layers': \(3, 2\)"):
        load_weights(model, path)
    # Same config, but the weights inside were tampered with: refused before anything is copied.
    data = load_checkpoint(save_checkpoint(tmp_path / "t.pt", model=GQN(tiny_config)))
    data["model"]["generator.prior.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_weights(model, data)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_flipped_bytes_never_give_a_raw_traceback(tiny_config, tmp_path):
    good = save_checkpoint(tmp_path / "g.pt", model=GQN(tiny_config)).read_bytes()
    rng = np.random.default_rng(0)
    refused = 0
    for i in range(20):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), size=8):
            data[pos] ^= 0xFF
        path = tmp_path / f"flip{i}.pt"
        path.write_bytes(bytes(data))
        try:
            model = load_model(path)
        except CheckpointError:
            refused += 1
            continue
        assert isinstance(model, GQN)  # flips inside tensor data can still load; never another error
    assert refused > 0


def _flat_config(**changes):
    """A config in the flat layout checkpoints had before the split into ``model`` and ``train``."""
    old = {
        "image_size": 16, "viewpoint_dim": 7, "representation": "patch", "r_channels": 8, "tower_channels": 8,
        "tower_layout": "compact", "hidden_channels": 8, "inference_channels": 0, "view_channels": 0,
        "z_channels": 2, "num_layers": 2, "core_kernel_size": 3, "share_core": True, "downsample": 4,
        "batch_size": 4, "context_min": 1, "context_max": 4, "sigma_start": 2.0, "sigma_end": 0.7,
        "sigma_anneal_steps": 100, "lr_start": 5e-4, "lr_end": 5e-5, "lr_anneal_steps": 100, "grad_clip": 100.0,
        "seed": 0,
    }  # fmt: skip
    return {**old, **changes}


def test_an_old_flat_config_checkpoint_loads_through_the_migration(tmp_path):
    # tower_channels was the patch network's width; inference_channels 0 meant "as hidden_channels".
    old = _flat_config(tower_channels=6, hidden_channels=10, view_channels=4, seed=3)
    expected = GQNConfig.tiny().replace(patch_channels=6, hidden_channels=10, inference_channels=10, view_channels=4)
    expected = expected.replace(seed=3, tower_channels=128)  # the tower is unused: its width takes the default
    source = GQN(expected)
    path = save_checkpoint(tmp_path / "old.pt", {"config": old, "model": source.state_dict(), "step": 2})
    assert torch.load(path, weights_only=True)["version"] == 2  # written in the old config layout, raw
    data = load_checkpoint(path)
    assert data["config"] == expected.to_dict()
    loaded = load_model(path)
    assert loaded.config == expected
    for name, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    # Fields added after a checkpoint was written take the values that reproduce it.
    older = {k: v for k, v in _flat_config().items() if k not in ("view_channels", "inference_channels")}
    migrated = GQNConfig.from_dict(migrate_config(older))
    assert (migrated.view_channels, migrated.inference_channels, migrated.patch_channels) == (0, 8, 8)
    paper = GQNConfig.from_dict(migrate_config(_flat_config(representation="pool", tower_layout="paper")))
    assert (paper.representation, paper.tower_channels, paper.patch_channels) == ("pool", 8, 64)
    assert migrate_config(expected.to_dict()) == expected.to_dict()  # the current layout passes through


def test_an_old_checkpoint_of_a_removed_variant_is_refused(tmp_path):
    config = _flat_config(representation="tower", tower_layout="compact")
    path = save_checkpoint(tmp_path / "compact.pt", {"config": config, "model": {}})
    with pytest.raises(CheckpointError, match="compact.*removed"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="Unknown config keys"):
        load_checkpoint(save_checkpoint(tmp_path / "typo.pt", {"config": _flat_config(r_dim=3), "model": {}}))


def test_the_bundled_model_is_saved_in_the_current_layout():
    bundled = Path(__file__).resolve().parents[2] / "gqn_env" / "assets" / "gqn_maze_cpu.pt"
    wrapper = torch.load(bundled, weights_only=True)
    content = torch.load(io.BytesIO(wrapper["payload"].numpy().tobytes()), weights_only=True)
    config = content["config"]
    current = GQNConfig.from_dict(config).to_dict()
    assert set(config) == {"model", "train"}  # no migration needed
    # Fields added since it was saved take their defaults.
    assert set(current["model"]) - set(config["model"]) <= set(LATER_MODEL_DEFAULTS)
    assert {**current["model"], **config["model"]} == current["model"]
    assert {**current["train"], **config["train"]} == current["train"]
    loaded = GQNConfig.from_dict(content["config"])
    # The cpu preset's architecture, with a map head for the generator's top-down views.
    head = {"map_channels": loaded.map_channels, "map_layout": loaded.map_layout}
    assert loaded.map_channels > 0
    assert loaded.architecture() == GQNConfig.cpu().replace(**head).architecture()
