"""How small the masks and codes of real packed files get under candidate entropy models (issue 40's design).

For each file, every compressed layer's mask (which weights are kept) and codes (the kept weights' levels) are
coded, for real, by ``constriction``'s ANS coder under each model, and the bytes are summed (ANS streams are
whole 32-bit words, so a layer's stream is rounded up to 4 bytes; a model's stored parameters are counted too):

* masks: today's index (bitmap or gap fields, the cheaper); the enumerative bound ``log2 C(n, k)``; an i.i.d.
  Bernoulli with the layer's kept share (16 bits stored); and a Bernoulli per *context*, the context being
  whether the previous weight (flattened order) and the same weight of the previous output channel are kept
  (4 probabilities of 16 bits stored, counted from the layer itself: two passes);
* codes: today's fixed width; a canonical Huffman code (lengths stored at 4 bits per level; its size follows
  from the histogram alone); a static categorical model of the layer's own level counts (stored at 16 bits
  per level); and the empirical entropy (the bound, nothing stored).

Nothing here chooses a plan or times anything; the files are the inputs.

    python benchmarks/entropy_models.py studies/default_ab/*/best.acz
"""

from __future__ import annotations

import argparse
import heapq
import math
from pathlib import Path

import constriction
import numpy as np
from _common import machine_line

from autocompress.pack import inspect_packed, read_packed

WORD_BYTES = 4  # constriction's compressed streams are u32 words
PROBABILITY_BITS = 16  # a stored probability
HUFFMAN_LENGTH_BITS = 4  # a stored code length (levels <= 255, lengths <= 15)


def ans_bytes(symbols: np.ndarray, model: object, *parameters: np.ndarray) -> int:
    """Bytes of ``symbols`` coded by one ANS stream under ``model`` (per-symbol ``parameters``, if any)."""
    if symbols.size == 0:
        return 0
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), model, *parameters)
    return WORD_BYTES * len(coder.get_compressed())


def clipped(probabilities: np.ndarray) -> np.ndarray:
    return np.clip(probabilities, 1e-4, 1 - 1e-4).astype(np.float64)


def mask_contexts(mask: np.ndarray) -> np.ndarray:
    """Context 0..3 of each weight: previous weight kept (flattened order) + 2 x same weight of the previous
    output channel kept (a layer's first weight and first channel see "not kept")."""
    flat = mask.reshape(mask.shape[0], -1)
    previous = np.concatenate([[0], flat.reshape(-1)[:-1]])
    above = np.concatenate([np.zeros((1, flat.shape[1]), dtype=flat.dtype), flat[:-1]]).reshape(-1)
    return previous.astype(np.int64) + 2 * above.astype(np.int64)


def context_mask_bytes(mask: np.ndarray) -> int:
    contexts = mask_contexts(mask)
    bits = mask.reshape(-1).astype(np.int64)
    kept = np.bincount(contexts, weights=bits, minlength=4)
    seen = np.bincount(contexts, minlength=4)
    p_kept = clipped((kept + 0.5) / (seen + 1.0))
    stored = 4 * PROBABILITY_BITS // 8
    return stored + ans_bytes(bits, constriction.stream.model.Bernoulli(perfect=False), p_kept[contexts])


def iid_mask_bytes(mask: np.ndarray) -> int:
    bits = mask.reshape(-1).astype(np.int64)
    p_kept = float(clipped(np.array([(bits.sum() + 0.5) / (bits.size + 1.0)]))[0])
    return PROBABILITY_BITS // 8 + ans_bytes(bits, constriction.stream.model.Bernoulli(perfect=False),
                                             np.full(bits.size, p_kept))


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code lengths of a Huffman code for the non-zero ``counts`` (one symbol: length 1)."""
    present = [(int(count), index) for index, count in enumerate(counts) if count > 0]
    lengths = np.zeros(counts.size, dtype=np.int64)
    if len(present) == 1:
        lengths[present[0][1]] = 1
        return lengths
    heap: list[tuple[int, int, list[int]]] = [(count, index, [index]) for count, index in present]
    heapq.heapify(heap)
    while len(heap) > 1:
        count_a, tie_a, members_a = heapq.heappop(heap)
        count_b, tie_b, members_b = heapq.heappop(heap)
        lengths[members_a + members_b] += 1
        heapq.heappush(heap, (count_a + count_b, min(tie_a, tie_b), members_a + members_b))
    return lengths


def huffman_code_bytes(codes: np.ndarray, levels: int) -> int:
    counts = np.bincount(codes, minlength=levels + 1)[1:]
    return math.ceil((int((counts * huffman_lengths(counts)).sum()) + levels * HUFFMAN_LENGTH_BITS) / 8)


def categorical_code_bytes(codes: np.ndarray, levels: int) -> int:
    counts = np.bincount(codes - 1, minlength=levels).astype(np.float64)
    probabilities = (counts + 1e-3) / (counts + 1e-3).sum()
    stored = levels * PROBABILITY_BITS // 8
    return stored + ans_bytes(codes - 1, constriction.stream.model.Categorical(probabilities, perfect=False))


def entropy_bytes(codes: np.ndarray) -> float:
    counts = np.bincount(codes).astype(np.float64)
    counts = counts[counts > 0]
    return float((counts * np.log2(counts.sum() / counts)).sum()) / 8 if counts.size else 0.0


def file_row(path: Path) -> dict[str, float]:
    contents = inspect_packed(path)
    packed = read_packed(path)
    row: dict[str, float] = {"file": float(contents.file_bytes), "index today": 0, "index enumerative bound": 0,
                             "index iid Bernoulli": 0, "index context Bernoulli": 0, "codes today": 0,
                             "codes Huffman": 0, "codes categorical": 0, "codes entropy bound": 0}
    for layer in contents.layers:
        codes_tensor = packed.quantized[layer.name].codes
        mask = (codes_tensor != 0).numpy()
        codes = codes_tensor.reshape(-1).numpy()
        kept_codes = codes[codes != 0]
        row["index today"] += layer.index_bytes
        row["index enumerative bound"] += layer.index_bound_bytes
        row["index iid Bernoulli"] += iid_mask_bytes(mask)
        row["index context Bernoulli"] += context_mask_bytes(mask)
        row["codes today"] += layer.codes_bytes
        row["codes Huffman"] += huffman_code_bytes(kept_codes, layer.levels)
        row["codes categorical"] += categorical_code_bytes(kept_codes, layer.levels)
        row["codes entropy bound"] += entropy_bytes(kept_codes)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    print(machine_line("entropy_models.py", f"{len(args.files)} files"), flush=True)
    for path in args.files:
        row = file_row(path)
        rest = row["file"] - row["index today"] - row["codes today"]
        print(f"\n{path} ({row['file']:,.0f} B; everything but index and codes: {rest:,.0f} B)")
        for key, value in row.items():
            if key != "file":
                base = row["index today"] if key.startswith("index") else row["codes today"]
                print(f"  {key:<26} {value:>9,.0f} B  {value / base:6.1%} of today's")
        best = rest + row["index context Bernoulli"] + row["codes categorical"]
        bound = rest + row["index enumerative bound"] + row["codes entropy bound"]
        print(f"  file with context masks + categorical codes: {best:,.0f} B = {best / row['file']:.3f} x today's; "
              f"the bound {bound:,.0f} B; {best / bound - 1:+.1%} from it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
