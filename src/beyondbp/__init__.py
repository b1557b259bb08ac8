"""beyondbp: train neural networks without exact backpropagation, and measure such methods against it.

Every method is a gradient estimator that fills ``p.grad``; one training loop serves all.
"""

from . import data, diagnostics, methods, models
from .errors import BeyondBPError
from .experiment import RunConfig, run
from .methods import make_method
from .objectives import make_objective
from .train import Trainer

__version__ = "0.2.0"

__all__ = ["BeyondBPError", "RunConfig", "Trainer", "data", "diagnostics", "make_method", "make_objective", "methods",
           "models", "run", "__version__"]
