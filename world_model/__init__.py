"""The GQN world model: configs, networks, data stream, trainer, evaluation.

Imports torch and numpy only (never MiniWorld or OpenGL).
"""

from world_model.checkpoint import CheckpointError, load_checkpoint, load_model, load_weights, save_checkpoint
from world_model.config import GQNConfig, ModelConfig, TrainConfig
from world_model.data import SceneBuffer
from world_model.evaluation import evaluate
from world_model.model import GQN
from world_model.store import SceneStore, StoreWriter
from world_model.trainer import BackgroundTrainer, Trainer

__all__ = [
    "GQN",
    "BackgroundTrainer",
    "CheckpointError",
    "GQNConfig",
    "ModelConfig",
    "SceneBuffer",
    "SceneStore",
    "StoreWriter",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "save_checkpoint",
]
