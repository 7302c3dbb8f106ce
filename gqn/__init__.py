"""gqn: the Generative Query Network and its pretraining (torch + numpy only)."""

from gqn.config import PRESETS, GQNConfig, TrainConfig
from gqn.model import GQN, GQNOutput, InferenceTrace
from gqn.viewpoint import pose_to_viewpoint

__all__ = ["GQN", "GQNConfig", "GQNOutput", "InferenceTrace", "PRESETS", "TrainConfig",
           "pose_to_viewpoint"]
__version__ = "0.1.0"
