"""Hugging Face ``transformers`` models as they are: ``--model hf:CLASS --hf-config key=value,...``.

``CLASS`` is any model class of ``transformers`` (``ViTForImageClassification``, ``BertForSequenceClassification``,
``GPT2LMHeadModel``, ...), built from its configuration class with random initialisation, or loaded with
``hf_pretrained`` (a hub name, where there is a network, or a local folder). What the data already says is
filled in unless given: ``num_labels`` (the number of outputs), for images ``[C, H, W]`` the
``num_channels`` and ``image_size`` of vision configurations, and for a causal language model on token ids
(task ``lm``) the ``vocab_size`` and enough positions for the context. A key the configuration class does not know is
refused (a configuration would otherwise keep it silently). The model's output object is reduced to its
``logits`` by :mod:`.outputs`. Needs the ``hf`` extra (``pip install 'beyondbp[hf]'``; ``make test`` has it).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import BeyondBPError

PREFIX = "hf:"


def is_hf(spec: str) -> bool:
    return spec.startswith(PREFIX)


def transformers_module():
    try:
        import transformers
    except ImportError:
        raise BeyondBPError("Hugging Face models need the transformers package: pip install 'beyondbp[hf]'") from None
    return transformers


def hf_class(spec: str) -> type:
    """The ``transformers`` model class that ``hf:CLASS`` names."""
    name = spec[len(PREFIX):]
    transformers = transformers_module()
    cls = getattr(transformers, name, None) if name else None
    if not isinstance(cls, type) or not hasattr(cls, "config_class"):
        known = [n for n in dir(transformers) if n.endswith(("Model", "LMHeadModel")) or "For" in n]
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5) or known[:5]
        raise BeyondBPError(f"--model {spec}: transformers has no model class '{name}'; e.g. {', '.join(close)}")
    return cls


def parse_value(text: str, flag: str = "--hf-config") -> Any:
    """``"32"`` → 32, ``"0.1"`` → 0.1, ``"true"`` → True, ``"none"`` → None, ``"[16,32]"`` → [16, 32] (a list of
    such values), anything else the string."""
    text = text.strip()
    if text.startswith("["):
        if not text.endswith("]") or "[" in text[1:-1]:
            raise BeyondBPError(f"{flag}: a list is [value,value,...] (not nested), got '{text}'")
        return [parse_value(part, flag) for part in split_items(text[1:-1], flag)]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def split_items(text: str, flag: str) -> list[str]:
    """``text`` split at the commas outside ``[...]``; empty items dropped."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            raise BeyondBPError(f"{flag}: a ']' without its '[' in '{text}'")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise BeyondBPError(f"{flag}: a '[' without its ']' in '{text}'")
    return [item.strip() for item in [*items, text[start:]] if item.strip()]


def parse_settings(text: str, flag: str = "--hf-config") -> dict[str, Any]:
    """``"hidden_size=32,num_hidden_layers=2"`` as a dict; a list value in brackets: ``"depths=[1,1]"``."""
    settings = {}
    for item in split_items(text, flag):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise BeyondBPError(f"{flag}: expected key=value,key=value (a list as key=[a,b]), got '{item}'")
        settings[key.strip()] = parse_value(value, flag)
    return settings


def check_settings(cls: type, settings: dict[str, Any]) -> None:
    """Refuse keys that ``cls``'s configuration does not have, naming a few it has."""
    known = set(cls.config_class().to_dict())
    unknown = sorted(set(settings) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}" if close else f"it has {', '.join(sorted(known)[:12])}, ..."
        raise BeyondBPError(f"--hf-config: {cls.config_class.__name__} has no setting "
                            f"{', '.join(map(repr, unknown))}; {hint}")


def causal_lm(cls: type) -> bool:
    """Whether ``cls`` predicts the next token at every position (``GPT2LMHeadModel``, ``LlamaForCausalLM``, ...)."""
    return cls.__name__.endswith(("LMHeadModel", "ForCausalLM"))


def derived_settings(cls: type, input_shape: Sequence[int], num_outputs: int) -> dict[str, Any]:
    """What the data says about the configuration: outputs (for a causal language model: the vocabulary, and
    positions for at least the context), and an image's channels and side."""
    defaults = cls.config_class().to_dict()
    derived: dict[str, Any] = {"num_labels": num_outputs}
    if causal_lm(cls) and len(input_shape) == 1:
        derived["vocab_size"] = num_outputs
        for key in ("n_positions", "max_position_embeddings"):
            if key in defaults and defaults[key] < input_shape[0]:
                derived[key] = input_shape[0]
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # ids of the model's own vocabulary
            if isinstance(defaults.get(key), int) and defaults[key] >= num_outputs:
                derived[key] = None
    if len(input_shape) == 3:
        channels, height, width = input_shape
        if "num_channels" in defaults:
            derived["num_channels"] = channels
        if "image_size" in defaults:
            derived["image_size"] = height if height == width else (height, width)
    return derived


def build_hf_model(spec: str, settings: dict[str, Any], pretrained: str | None, input_shape: Sequence[int],
                   num_outputs: int) -> nn.Module:
    """The model class ``spec`` names, configured by ``settings`` and the data (see the module docstring)."""
    cls = hf_class(spec)
    check_settings(cls, settings)
    config = {**derived_settings(cls, input_shape, num_outputs), **settings}
    try:
        if pretrained:
            return cls.from_pretrained(pretrained, ignore_mismatched_sizes=True, **config)
        return cls(cls.config_class(**config))
    except Exception as error:  # transformers checks a configuration its own way (or fails inside the model)
        message = " ".join(str(error).split())
        raise BeyondBPError(f"--model {spec}: building it from its settings failed: {type(error).__name__}: "
                            f"{message[:300]}{'...' if len(message) > 300 else ''}") from None
