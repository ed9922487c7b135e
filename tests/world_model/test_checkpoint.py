from __future__ import annotations

import pickle

import pytest
import torch

from world_model import GQN, CheckpointError, Trainer, load_checkpoint, load_model, save_checkpoint


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
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(path)


def test_garbage_and_foreign_files_raise(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError):
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
    with pytest.raises(CheckpointError, match="unsafe"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


def test_save_is_atomic_when_writing_fails(tiny_config, tiny_buffer, tmp_path):
    path = Trainer(tiny_config, tiny_buffer).save(tmp_path / "d.pt")
    good = path.read_bytes()
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        save_checkpoint(path, {"config": tiny_config.to_dict(), "model": {}, "bad": lambda: 0})
    assert path.read_bytes() == good
    assert not list(tmp_path.glob(".*tmp"))
