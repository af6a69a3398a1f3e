"""Model registry: names such as ``resnet20`` or ``package.module:factory`` to ``nn.Module``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TypeVar, overload

from torch import nn

from autocompress.errors import ModelSpecError

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)

_REGISTRY: dict[str, ModelFactory] = {}


@overload
def register_model(factory: F, *, name: str | None = None) -> F: ...
@overload
def register_model(factory: None = None, *, name: str | None = None) -> Callable[[F], F]: ...


def register_model(factory: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register ``factory(num_classes: int = 10) -> nn.Module`` under ``name`` (default: its
    function name). Use as ``@register_model`` or ``@register_model(name="...")``."""

    def decorate(fn: F) -> F:
        key = (name or fn.__name__).lower()
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            raise ModelSpecError(f"a model named {key!r} is already registered; pick another name")
        _REGISTRY[key] = fn
        return fn

    return decorate(factory) if factory is not None else decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def build_model(spec: str, num_classes: int = 10) -> nn.Module:
    """Build a fresh model from a registered name or a ``package.module:factory`` spec.

    A factory named by ``package.module:factory`` is called as ``factory(num_classes=...)`` when
    its signature accepts ``num_classes`` (or ``**kwargs``), otherwise as ``factory()``.
    """
    if num_classes < 1:
        raise ModelSpecError(f"num_classes must be at least 1, got {num_classes}")
    if ":" in spec:
        factory = _import_factory(spec)
        model = factory(num_classes=num_classes) if _accepts_num_classes(factory) else factory()
    else:
        key = spec.strip().lower()
        if key not in _REGISTRY:
            raise ModelSpecError(
                f"unknown model {spec!r}; registered models are {', '.join(list_models())}, "
                "or give an importable factory as 'package.module:function'"
            )
        model = _REGISTRY[key](num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"model factory {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def _import_factory(spec: str) -> ModelFactory:
    module_name, _, attr_path = spec.strip().partition(":")
    if not module_name or not attr_path:
        raise ModelSpecError(f"cannot read {spec!r} as 'package.module:factory'; both parts are needed")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(
            f"cannot import module {module_name!r} from model spec {spec!r}: {exc}; "
            "check the module is installed or on PYTHONPATH"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"module {module_name!r} has no attribute {attr_path!r} (model spec {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"{spec!r} names {type(obj).__name__}, not a callable model factory")
    return obj


def _accepts_num_classes(factory: ModelFactory) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_classes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
