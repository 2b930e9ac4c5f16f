"""``--model-kwargs img_size=32,patch_size=4``: keyword arguments for ``timm.create_model``, typed.

They are part of the run (a ViT with patch 4 is another network than one with patch 16), so they are a
config field, recorded in ``config.json`` and compared by reuse and ``--resume``. Values are typed the
way YAML types them (``32`` int, ``0.1`` float, ``true`` bool, ``none`` None, ``avg`` str,
``[8,8]`` a tuple), so ``img_size=32`` on the command line and ``img_size: 32`` in a config file are
one run. Only plain values are accepted: they must round-trip through ``config.json`` unchanged.
Whether timm's model takes a name is checked where the model is built
(:func:`dstbench.train.setup.build_model`), since only the model knows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import yaml

from dstbench.core.errors import ConfigError

__all__ = ["ModelKwargs", "parse_model_kwargs", "check_model_kwargs", "RESERVED_MODEL_KWARGS", "to_timm"]

ModelKwargs = dict[str, Any]

RESERVED_MODEL_KWARGS: dict[str, str] = {
    "num_classes": "the number of classes comes from the dataset",
    "pretrained": "dstbench trains from scratch (every method starts from its own initialisation)",
    "pretrained_cfg": "dstbench trains from scratch",
    "checkpoint_path": "dstbench trains from scratch",
}
"""Arguments of ``timm.create_model`` that a run decides itself, with the reason given when one is set."""

_SCALARS = (bool, int, float, str, type(None))


def _split_top_level(text: str) -> list[str]:
    """``"a=1,b=[2,3]"`` -> ``["a=1", "b=[2,3]"]``: commas inside brackets belong to a value."""
    items: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]


def _number(text: str) -> int | float | None:
    """``text`` as an int or a finite float, else None. Before YAML: YAML 1.1 reads ``1e-05`` (a dot-less
    exponent, how Python prints small floats) as a string."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return value if math.isfinite(value) else None
    return None


def _parse_value(name: str, text: str) -> Any:
    """One value as YAML types it (numbers as Python reads them); ``(8,8)`` is read as ``[8,8]``."""
    if text.lower() in ("none", "null"):
        return None
    number = _number(text)
    if number is not None:
        return number
    if text.startswith("(") and text.endswith(")"):
        text = "[" + text[1:-1] + "]"
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        raise ConfigError(f"--model-kwargs {name}: cannot read the value {text!r}") from None


def parse_model_kwargs(text: str) -> ModelKwargs:
    """``"img_size=32,patch_size=4"`` -> ``{"img_size": 32, "patch_size": 4}``, checked."""
    parsed: dict[str, Any] = {}
    for item in _split_top_level(text):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--model-kwargs expects name=value pairs separated by commas, got {item!r}")
        parsed[name.strip()] = _parse_value(name.strip(), value.strip())
    return check_model_kwargs(parsed)


def _checked_value(name: str, value: Any, source: str) -> Any:
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        return list(value)  # JSON keeps lists; the model gets a tuple (to_timm)
    if isinstance(value, _SCALARS) and not (isinstance(value, float) and not math.isfinite(value)):
        return value
    raise ConfigError(
        f"{source} {name}: {value!r} is not a number, true/false, none, a word or a list of numbers"
    )


def check_model_kwargs(value: Any, source: str = "--model-kwargs") -> ModelKwargs:
    """A mapping (or the command line's text) of identifier -> plain value; one line otherwise."""
    if isinstance(value, str):
        return parse_model_kwargs(value) if value.strip() else {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source} must be a mapping of name: value, got {type(value).__name__}")
    checked: dict[str, Any] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{source}: {name!r} is not an argument name")
        if name in RESERVED_MODEL_KWARGS:
            raise ConfigError(f"{source}: {name} cannot be set: {RESERVED_MODEL_KWARGS[name]}")
        checked[name] = _checked_value(name, item, source)
    return dict(sorted(checked.items()))


def to_timm(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """What ``timm.create_model`` gets: lists as tuples (timm's image and patch sizes are tuples)."""
    return {name: tuple(value) if isinstance(value, list) else value for name, value in kwargs.items()}
