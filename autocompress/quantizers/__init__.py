"""Weight quantizers and their registry.

Each quantizer is one entry of a registry keyed by name, with a permanent
``file_id`` that the packed ``.acz`` file stores (clipq 0, uniform 1,
kmeans 2, clipq_full 3). The contract every entry keeps is documented on :class:`Quantizer`.

This package is low-level: it imports torch, numpy, scikit-learn (lazily, for
k-means) and :mod:`autocompress.errors`, never the plan, compress or pack code.
"""

from __future__ import annotations

from autocompress.quantizers._base import Quantizer
from autocompress.quantizers._clipq import ClipQFullQuantizer, ClipQQuantizer
from autocompress.quantizers._kmeans import KMEANS_SAMPLE, KMeansQuantizer, kmeans_centroids
from autocompress.quantizers._registry import (
    QUANTIZER_REGISTRY,
    UnknownQuantizerError,
    get_quantizer,
    quantizer_for_file_id,
    quantizer_names,
    register_quantizer,
)
from autocompress.quantizers._uniform import UniformQuantizer, uniform_grid, uniform_grid_max

register_quantizer(ClipQQuantizer())
register_quantizer(UniformQuantizer())
register_quantizer(KMeansQuantizer())
register_quantizer(ClipQFullQuantizer())

__all__ = [
    "KMEANS_SAMPLE",
    "QUANTIZER_REGISTRY",
    "ClipQFullQuantizer",
    "ClipQQuantizer",
    "KMeansQuantizer",
    "Quantizer",
    "UniformQuantizer",
    "UnknownQuantizerError",
    "get_quantizer",
    "kmeans_centroids",
    "quantizer_for_file_id",
    "quantizer_names",
    "register_quantizer",
    "uniform_grid",
    "uniform_grid_max",
]
