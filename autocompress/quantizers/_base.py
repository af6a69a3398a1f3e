"""The abstract quantizer: the contract every registered quantizer keeps."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import torch


class Quantizer(abc.ABC):
    """A weight quantizer: one entry of the registry (see :func:`register_quantizer`).

    A quantizer turns the kept weights of one layer into integer *codes* plus a
    small fp16 *table*, and turns them back into float32 weights. Every
    implementation keeps this contract, which the packed ``.acz`` file, the size
    accounting and fake-quant training all rely on:

    * ``name`` is the string plans use (``quantizer: clipq``).
    * ``file_id`` is the integer written into the packed file for this quantizer
      (one byte, 0..255). It is permanent: once a file has been written with it,
      it never changes and is never given to another quantizer, whatever the
      order in which quantizers are registered.
    * :meth:`n_levels` is the number of non-zero levels at ``bits`` when
      ``n_kept`` weights are kept; a pure function of the two, so size can be
      counted from a plan without quantizing anything.
    * :meth:`table_length` is the number of fp16 numbers in the table, from the
      number of levels and the layer's output channels (weight dimension 0).
    * :meth:`quantize` takes a float32 weight, a boolean keep-mask of the same
      shape (at least one ``True``) and ``bits``, and returns ``(codes, table)``:
      ``codes`` is int64 of the weight's shape, exactly 0 where the mask is
      ``False`` and in ``1..n_levels`` where it is ``True`` (a kept weight never
      gets code 0, so quantization cannot change which weights are zero);
      ``table`` is fp16 of :meth:`table_length` numbers. It is deterministic.
    * :meth:`dequantize` maps ``(codes, table, bits)`` to the float32 weight the
      codes stand for, exactly 0 at code 0 and non-zero elsewhere, with at most
      ``n_levels`` distinct non-zero values in each output channel (in the
      whole layer for a codebook). The in-memory
      model and the packed-file reader both go through it, so both give
      bit-identical weights.
    * :meth:`next_init` is the fake-quant training hook: from the table of the
      last call it gives the ``init`` of the next :meth:`quantize` call on the
      same layer (a warm start), or ``None`` when the quantizer has none.
    * :meth:`distortions` gives ``||W - dequantize(quantize(W))||^2`` for several
      bit-widths at once (the projection asks for it thousands of times); an
      entry may compute it faster than quantizing, but must give the same numbers
      up to float64 rounding. :meth:`sorted_kept_errors` is the optional fast
      path from the kept weights alone, sorted (``None`` where the quantizer needs
      more than that, e.g. the channel of each weight). :meth:`sorted_kept_counts` is the same
      kind of fast path for the level counts the file's entropy coder sees.

    Entries are stateless: one instance serves every layer.
    """

    name: ClassVar[str]
    file_id: ClassVar[int]

    @abc.abstractmethod
    def n_levels(self, bits: int, n_kept: int) -> int:
        """Number of non-zero levels the codes use at ``bits`` with ``n_kept`` kept weights."""

    def table_length(self, n_levels: int, out_channels: int) -> int:
        """Number of fp16 numbers in the table; a codebook of ``n_levels`` unless overridden."""
        return n_levels

    @abc.abstractmethod
    def quantize(
        self, weight: torch.Tensor, mask: torch.Tensor, bits: int, *, init: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (int64, 0 = pruned) and fp16 table of ``weight`` where ``mask`` keeps it."""

    def dequantize(self, codes: torch.Tensor, table: torch.Tensor, bits: int) -> torch.Tensor:
        """The float32 weight: code ``c`` is ``table[c - 1]`` (a codebook) unless overridden."""
        levels = torch.cat([torch.zeros(1, device=codes.device), table.float()])
        return levels[codes]

    def distortions(self, weight: torch.Tensor, mask: torch.Tensor, bits_choices: Sequence[int]) -> list[float]:
        """Squared error of the whole layer (pruned weights included) at each of ``bits_choices``."""
        weight = weight.detach().float()
        errors = []
        for bits in bits_choices:
            codes, table = self.quantize(weight, mask, bits)
            errors.append(float((self.dequantize(codes, table, bits) - weight).double().pow(2).sum()))
        return errors

    def sorted_kept_errors(self, ordered: torch.Tensor, bits_choices: Sequence[int]) -> list[float] | None:
        """The kept weights' squared errors at each of ``bits_choices`` from those weights alone, sorted
        ascending (1-D); ``None`` when this quantizer cannot tell from them (the default)."""
        return None

    def sorted_kept_counts(self, ordered: torch.Tensor, bits: int) -> torch.Tensor | None:
        """How many kept weights each level gets at ``bits`` (int64, ``n_levels`` long), from the kept
        weights alone, sorted ascending; ``None`` when this quantizer cannot tell from them (the default).
        The entropy-coded file's size depends on these counts, so planners price a layer with them."""
        return None

    def next_init(self, table: torch.Tensor) -> torch.Tensor | None:
        """The ``init`` of the next :meth:`quantize` call given the last table; ``None``: no warm start."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, file_id={self.file_id})"
