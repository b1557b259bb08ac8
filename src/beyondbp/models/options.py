"""The model section of a run's configuration: a registered model and its sizes, or the user's own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..errors import BeyondBPError
from ..options import Section, option
from .factory import build_user_model, is_factory, load_factory, with_output_activation
from .hf import build_hf_model, check_settings, hf_class, is_hf, parse_settings
from .outputs import select_output
from .registry import ACTIVATIONS, MODELS, build_model, model_settings
from .resnet import SHORTCUTS
from .vit import NORM_PLACES

GROUP = "model"
#: Settings of models from elsewhere, not of the registered models.
OWN_MODELS_ONLY = ("model", "output_key", "hf_config", "hf_pretrained")


@dataclass
class ModelOptions(Section):
    """The model of a run; each model constructor takes the sizes it knows."""

    model: str = option("mlp", GROUP, "model, or your own: FILE.py:FUNCTION or package.module:FUNCTION, called as "
                                      "FUNCTION(input_shape, num_outputs), or hf:CLASS (a transformers model class)")
    hidden: tuple[int, ...] = option((500,), GROUP, "hidden widths, e.g. 500,500")
    activation: str = option("tanh", GROUP, "hidden activation")
    channels: tuple[int, ...] = option((32, 64), GROUP, "cnn: conv channels")
    depth: int = option(4, GROUP, "vit, gpt: transformer blocks; f3vit: hidden blocks, the last the head's hidden "
                                  "layer")
    width: int = option(128, GROUP, "vit, gpt: token width; f3vit: the whole sequence's width")
    heads: int = option(4, GROUP, "vit, f3vit, gpt: attention heads")
    head_dim: int | None = option(None, GROUP, "vit, f3vit, gpt: dimension per head (default token width / heads)")
    mlp: int = option(256, GROUP, "vit, f3vit, gpt: MLP width")
    patch: int | None = option(None, GROUP, "vit, f3vit: patch size (default a quarter of the image side)")
    norm: str = option("pre", GROUP, "vit, gpt: layer norm before each sublayer (pre: GPT-2, ViT) or after each "
                                     "residual sum (post: the original transformer; DFA trains it far better)",
                       choices=NORM_PLACES)
    tie_weights: bool = option(False, GROUP, "gpt: the output layer uses the token embedding's matrix")
    shortcut: str = option("A", GROUP, "resnet20/32/56: shortcuts where the shape changes: A (zero-padded "
                                       "identity) or B (1x1 conv)", choices=SHORTCUTS)
    output_key: str | None = option(None, GROUP, "your own or hf: model returning a dict, tuple or ModelOutput: the "
                                                 "element to train on (default logits, else the first tensor)",
                                    metavar="KEY")
    hf_config: str = option("", GROUP, "hf:CLASS: its configuration, e.g. hidden_size=64,num_hidden_layers=2",
                            metavar="KEY=VALUE,...")
    hf_pretrained: str | None = option(None, GROUP, "hf:CLASS: load weights from a hub name or a local folder",
                                       metavar="NAME")

    def check(self) -> None:
        super().check()
        ACTIVATIONS.get(self.activation)
        if is_hf(self.model):
            check_settings(hf_class(self.model), parse_settings(self.hf_config))
        elif self.hf_config or self.hf_pretrained:
            raise BeyondBPError(f"--hf-config and --hf-pretrained apply to hf:CLASS models, not '{self.model}'")
        elif is_factory(self.model):
            load_factory(self.model)
        else:
            MODELS.get(self.model)
        if any(h < 1 for h in self.hidden):
            raise BeyondBPError(f"hidden widths must be positive, got {','.join(map(str, self.hidden))}")

    def describe(self) -> str:
        """The model and the sizes it reads, for reports: ``gpt depth 4, width 128, ...``."""
        if is_hf(self.model):
            return f"{self.model} {self.hf_config}".strip()
        if is_factory(self.model):
            return self.model
        value = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
        sizes = [f"{name} {value(getattr(self, name))}" for name in model_settings(self.model)
                 if name in self.names() and getattr(self, name) is not None]
        return f"{self.model} {', '.join(sizes)}".strip()

    def build(self, input_shape: Sequence[int], num_outputs: int, output_activation: nn.Module) -> nn.Module:
        """The model (seed the generator first: its initialisation draws from it)."""
        if is_hf(self.model):
            model = build_hf_model(self.model, parse_settings(self.hf_config), self.hf_pretrained, input_shape,
                                   num_outputs)
            return with_output_activation(select_output(model, self.output_key), output_activation)
        if is_factory(self.model):
            return build_user_model(self.model, input_shape, num_outputs, output_activation, self.output_key)
        sizes = {name: getattr(self, name) for name in self.names() if name not in OWN_MODELS_ONLY}
        return build_model(self.model, input_shape, num_outputs, output_activation, **sizes)
