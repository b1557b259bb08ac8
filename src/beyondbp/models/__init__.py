"""Models as sequences of blocks (``nn.Sequential`` whose children are the blocks).

Direct-feedback methods inject their signal at the output of every block but the last;
the last block is the output head and always receives its true local gradient.
"""

from .cnn import cnn
from .f3vit import f3vit
from .mlp import mlp
from .registry import ACTIVATIONS, MODELS, activation, build_model
from .vit import PositionEmbedding, vit

__all__ = ["ACTIVATIONS", "MODELS", "PositionEmbedding", "activation", "build_model", "cnn", "f3vit", "mlp", "vit"]
