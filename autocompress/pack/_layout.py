"""What a packed file stores for each tensor of a model, in state-dict order."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.compress import compressible_layers, is_foldable_batchnorm

KIND_RAW32 = 0  # float tensor stored as it is (weights of layers the plan leaves alone)
KIND_HALF = 1  # biases, stored in fp16
KIND_BATCHNORM = 2  # a folded batch norm: per-channel scale and shift in fp16
KIND_CODES = 3  # a plan layer's weight: codes, index and table
KIND_NAMES = {KIND_RAW32: "fp32", KIND_HALF: "fp16", KIND_BATCHNORM: "batchnorm", KIND_CODES: "codes"}
_PARAMETRIZED_SUFFIX = ".parametrizations.weight.original"


@dataclass(frozen=True)
class Entry:
    """One record of the file: ``name`` is a state-dict key, or a module name for BN and codes."""

    kind: int
    name: str
    numel: int
    out_channels: int


def state_key(key: str) -> str:
    """The key a tensor has without a fake-quant parametrization."""
    return key.replace(_PARAMETRIZED_SUFFIX, ".weight")


def canonical_state(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """State-dict items in an order that does not depend on how tensors were (re-)registered:
    modules in ``named_modules`` order, a module's tensors by attribute name."""
    module_rank = {name: rank for rank, (name, _) in enumerate(model.named_modules())}
    items = [(state_key(key), tensor) for key, tensor in model.state_dict().items()]
    return sorted(items, key=lambda item: (module_rank[item[0].rpartition(".")[0]], item[0].rpartition(".")[2]))


def model_entries(model: nn.Module, plan_layers: set[str]) -> list[Entry]:
    """The file's entries for ``model`` when ``plan_layers`` are compressed."""
    modules = dict(model.named_modules())
    compressible = set(compressible_layers(model))
    entries: list[Entry] = []
    folded: set[str] = set()
    for key, tensor in canonical_state(model):
        module_name, _, attribute = key.rpartition(".")
        module = modules[module_name]
        if is_foldable_batchnorm(module):
            if module_name not in folded:
                folded.add(module_name)
                entries.append(Entry(KIND_BATCHNORM, module_name, module.num_features, module.num_features))
            continue
        if not tensor.is_floating_point():
            continue  # counters such as num_batches_tracked: rebuilt by the model itself
        out_channels = tensor.shape[0] if tensor.dim() else 1
        if attribute == "weight" and module_name in compressible and module_name in plan_layers:
            entries.append(Entry(KIND_CODES, module_name, tensor.numel(), out_channels))
        elif attribute == "bias":
            entries.append(Entry(KIND_HALF, key, tensor.numel(), out_channels))
        else:
            entries.append(Entry(KIND_RAW32, key, tensor.numel(), out_channels))
    return entries


def model_fingerprint(model: nn.Module) -> int:
    """CRC-32 of the floating tensors' keys and shapes: tells whether a file fits a model."""
    listing = ";".join(f"{key}:{tuple(tensor.shape)}" for key, tensor in canonical_state(model) if tensor.is_floating_point())
    return zlib.crc32(listing.encode())


def plain_entry_bytes(entry: Entry) -> int:
    """Bytes of an entry that is not a plan layer (kind byte included)."""
    if entry.kind == KIND_RAW32:
        return 1 + 4 * entry.numel
    if entry.kind == KIND_HALF:
        return 1 + 2 * entry.numel
    if entry.kind == KIND_BATCHNORM:
        return 1 + 2 * 2 * entry.numel
    raise ValueError(f"entry {entry.name} is a plan layer")
