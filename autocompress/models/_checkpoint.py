"""Checkpoint files: load a state dict into a model with clear errors, save atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autocompress.errors import CheckpointError
from autocompress.files import atomic_path

_STATE_DICT_KEYS = ("state_dict", "model")
_SHOWN_KEYS = 5


def load_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the weights in ``path`` into ``model`` (in place) and return the file's other entries.

    ``path`` may hold a raw state dict or a dict with a ``"state_dict"`` or ``"model"`` entry
    (e.g. ``{"state_dict": ..., "best_prec1": 91.73}`` returns ``{"best_prec1": 91.73}``). A
    leading ``module.`` (from DataParallel) is stripped. Anything that does not fit the model
    exactly raises one :class:`CheckpointError` that lists the differences.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path passed as --checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}; it must be a torch.save file of tensors "
            "(a state dict), not a truncated file or a pickled model object"
        ) from exc
    state_dict, extra = _split_payload(payload, path)
    state_dict = _strip_prefix(state_dict, "module.")
    state_dict = _fill_batch_counters(model, state_dict)
    _check_fits(model, state_dict, path)
    _check_finite(state_dict, path)
    model.load_state_dict(state_dict, strict=True)
    return extra


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> None:
    """Write ``{"state_dict": model.state_dict() (on CPU), **extra}`` to ``path`` atomically."""
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    atomic_torch_save({"state_dict": state_dict, **extra}, path)


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (``autocompress.files``): an interrupted save never
    leaves a truncated file behind."""
    with atomic_path(path, mode=0o600) as temporary:
        torch.save(obj, temporary)


def _split_payload(payload: object, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not a state dict")
    for key in _STATE_DICT_KEYS:
        if isinstance(payload.get(key), Mapping):
            extra = {k: v for k, v in payload.items() if k != key}
            return dict(payload[key]), extra
    if payload and all(isinstance(v, Tensor) for v in payload.values()):
        return dict(payload), {}
    raise CheckpointError(
        f"checkpoint {path} has no state dict: expected a dict of tensors or a dict with a "
        f"'state_dict' or 'model' entry, found keys {sorted(map(str, payload))[:_SHOWN_KEYS]}"
    )


def _strip_prefix(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def _fill_batch_counters(model: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add the BatchNorm ``num_batches_tracked`` counters that pre-0.4.1 checkpoints lack (as 0)."""
    filled = dict(state_dict)
    for key in model.state_dict():
        if key.endswith("num_batches_tracked") and key not in filled:
            filled[key] = torch.tensor(0, dtype=torch.long)
    return filled


def _check_finite(state_dict: Mapping[str, Tensor], path: Path) -> None:
    """Refuse weights that are NaN or infinite: nothing trained or measured from them would mean anything."""
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"checkpoint {path}: tensor {key} holds {bad:,} NaN or infinite value(s) of "
                                  f"{value.numel():,}; the weights are broken: retrain or re-export them")


def _check_fits(model: nn.Module, state_dict: Mapping[str, Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} (checkpoint {tuple(state_dict[key].shape)}, model {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = [
        f"{label}: {len(items)} ({', '.join(items[:_SHOWN_KEYS])}{', ...' if len(items) > _SHOWN_KEYS else ''})"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    raise CheckpointError(
        f"checkpoint {path} does not fit model {type(model).__name__}: {'; '.join(problems)}. "
        "The checkpoint is probably for another model (or another number of classes); "
        "pass the matching --model"
    )
