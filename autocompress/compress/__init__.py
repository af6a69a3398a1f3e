"""Compression primitives: masks, quantizers, fake-quant training, hardening, BN recalibration."""

from __future__ import annotations

from autocompress.compress._batchnorm import recalibrate_bn_
from autocompress.compress._fakequant import FakeQuantize, attach_fake_quant_, detach_fake_quant_
from autocompress.compress._harden import (
    folded_running_var,
    harden_,
    is_foldable_batchnorm,
    round_to_storage_precision_,
)
from autocompress.compress._layers import (
    CompressibleLayer,
    compressible_layers,
    full_precision_weight,
    kept_count,
    layer_weight_counts,
)
from autocompress.compress._quantizers import (
    QuantizedWeight,
    dequantize,
    kmeans_centroids,
    magnitude_mask,
    magnitude_ranks,
    n_levels_for,
    quantize,
    uniform_grid_max,
)

__all__ = [
    "CompressibleLayer",
    "FakeQuantize",
    "QuantizedWeight",
    "attach_fake_quant_",
    "compressible_layers",
    "dequantize",
    "detach_fake_quant_",
    "folded_running_var",
    "full_precision_weight",
    "harden_",
    "is_foldable_batchnorm",
    "kept_count",
    "kmeans_centroids",
    "layer_weight_counts",
    "magnitude_mask",
    "magnitude_ranks",
    "n_levels_for",
    "quantize",
    "recalibrate_bn_",
    "round_to_storage_precision_",
    "uniform_grid_max",
]
