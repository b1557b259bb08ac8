"""The built-in models: sequences of blocks (``nn.Sequential`` whose children are the blocks: mlp, cnn, vit,
f3vit, gpt, vgg11/16), where direct-feedback methods inject their signal at the output of every block but the last
(the output head always receives its true local gradient), and residual networks (resnet20/32/56/18), whose
residual blocks are the points.
"""

from .cnn import cnn
from .f3vit import f3vit
from .gpt import gpt
from .mlp import mlp
from .registry import ACTIVATIONS, MODELS, activation, build_model
from .resnet import ResNet, resnet18
from .vgg import vgg
from .vit import PositionEmbedding, vit

__all__ = ["ACTIVATIONS", "MODELS", "PositionEmbedding", "ResNet", "activation", "build_model", "cnn", "f3vit", "gpt",
           "mlp", "resnet18", "vgg", "vit"]
