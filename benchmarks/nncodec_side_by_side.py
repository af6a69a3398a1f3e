"""The same quantized integer codes coded by the packed format 2 and by ``nncodec`` (DeepCABAC, ISO/IEC 15938-17).

For each packed file given, every compressed layer's codes (0 for a pruned weight) become signed integers the way
a codebook coder sees them: the layer's levels sorted, the negative ones numbered -1, -2, ... outward from zero and
the positive ones 1, 2, ...; the uniform quantizer's codes are its integer grid (+-1..+-Q) already. Those integer
tensors are handed to DeepCABAC's layer encoder (``nncodec`` 2.1.3's ``deepCABAC.Encoder.encodeLayer``, context
models initialised as ``nncodec`` does, unary length 11, no dependent quantization), and the bytes of each layer's
bitstream are compared with what format 2 stores for the same layer: its mask and codes streams and its frequency
table (the fp16 levels are stored by both and left out). Decoding is timed for the whole file: ``read_packed`` (our
streams decoded, the model built and its weights set) against DeepCABAC's ``decodeLayer`` of every layer (the
integer tensors only); each is checked to give back what was coded.

``nncodec`` pins ``numpy<2`` and pulls opencv and more, so it lives in an environment of its own, given by
``--nncodec-python`` (made with ``python3 -m venv /tmp/nnc-venv && /tmp/nnc-venv/bin/pip install nncodec==2.1.3``,
which compiles its C++ extension in about 4 minutes); this script runs its DeepCABAC half there.

    python benchmarks/nncodec_side_by_side.py --nncodec-python /tmp/nnc-venv/bin/python \\
        studies/a/best.acz studies/b/best.acz studies/c/best.acz
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NNCODEC_SIDE = r'''
import json, sys, time
import numpy as np
from nncodec.extensions import deepCABAC
from nncodec.nnc_core.hdsp.hdsp_tool import HDSP_OPTS_OFF

UNARY = 11  # nncodec: cabac_unary_length_minus1 (10) + 1, for encoder and decoder alike
arrays = np.load(sys.argv[1])
result = {}
for name in arrays.files:
    values = np.ascontiguousarray(arrays[name].astype(np.int32))
    encoder = deepCABAC.Encoder()
    encoder.initCtxModels(UNARY, 1)
    skip = np.zeros(values.shape[0], dtype=np.int32)
    encoder.encodeLayer(values, 0, 0, 1, 0, 0, skip, *HDSP_OPTS_OFF(), 0, 0)
    stream = encoder.finish().tobytes()
    seconds = []
    for _ in range(5):
        decoder = deepCABAC.Decoder()
        decoder.setStream(np.frombuffer(stream, dtype=np.uint8))
        decoder.initCtxModels(UNARY)
        decoded = np.zeros_like(values)
        started = time.perf_counter()
        decoder.decodeLayer(decoded, 0, 0, 1, 0, *HDSP_OPTS_OFF(), 0, 0)
        decoder.finish()
        seconds.append(time.perf_counter() - started)
        assert np.array_equal(decoded, values), name
    result[name] = {"bytes": len(stream), "decode_seconds": sorted(seconds)[2]}
print(json.dumps(result))
'''


def signed_integers(codes: np.ndarray, table: np.ndarray, quantizer: str, bits: int) -> np.ndarray:
    """The layer's codes as signed integers around zero (0: pruned)."""
    if quantizer == "uniform":
        grid_max = max(1, 2 ** (bits - 1) - 1)
        return np.where(codes > grid_max, -(codes - grid_max), codes)
    levels = table.astype(np.float64)
    order = np.argsort(levels, kind="stable")
    negative = int((levels < 0).sum())
    rank = np.empty(levels.size, dtype=np.int64)
    rank[order] = np.arange(levels.size)
    signed_of_code = np.where(rank < negative, rank - negative, rank - negative + 1)  # -negative..-1, then 1..
    return np.where(codes > 0, signed_of_code[np.maximum(codes, 1) - 1], 0)


def main() -> int:
    from _common import machine_line

    from autocompress.pack import FORMAT_VERSION, inspect_packed, read_packed, write_packed

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--nncodec-python", type=Path, required=True)
    args = parser.parse_args()
    print(f"# nncodec_side_by_side.py  {machine_line('nncodec_side_by_side')}")
    for given in args.files:
        work = Path(tempfile.mkdtemp())
        path = work / "format2.acz"  # the file's codes in today's format (a file of format 1 is coded again)
        original = read_packed(given)
        write_packed(path, original.model, original.quantized, model_spec=original.model_spec,
                     num_classes=original.num_classes, version=FORMAT_VERSION)
        contents = inspect_packed(path)
        packed = read_packed(path)
        reads = []
        for _ in range(5):
            started = time.perf_counter()
            read_packed(path)
            reads.append(time.perf_counter() - started)
        arrays = {}
        for layer in contents.layers:
            quantized = packed.quantized[layer.name]
            arrays[layer.name] = signed_integers(quantized.codes.numpy(), quantized.table.float().numpy(), quantized.quantizer,
                                                 quantized.bits).reshape(quantized.codes.shape)
        with tempfile.TemporaryDirectory() as folder:
            npz = Path(folder) / "codes.npz"
            np.savez(npz, **arrays)
            done = subprocess.run([str(args.nncodec_python), "-c", NNCODEC_SIDE, str(npz)], capture_output=True, text=True,
                                  check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:])
            raise SystemExit(f"the nncodec side failed on {path}")
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"\n{given} (format {original.version}, {original.n_bytes:,} B): {contents.model_spec}, "
              f"{contents.file_bytes:,} B in format {contents.format_version}")
        print(f"{'layer':<18} {'weights':>8} {'kept':>7} {'bits':>4} {'format 2 B':>10} {'nncodec B':>10} {'ratio':>6}")
        ours_total = theirs_total = 0
        for layer in contents.layers:
            fp16_levels = 2 * packed.quantized[layer.name].table.numel()
            ours = layer.index_bytes + layer.codes_bytes + layer.table_bytes - fp16_levels
            ours_total += ours
            theirs_total += theirs[layer.name]["bytes"]
            print(f"{layer.name:<18} {layer.weights:>8,} {layer.kept:>7,} {layer.bits:>4} {ours:>10,} {theirs[layer.name]['bytes']:>10,} "
                  f"{ours / theirs[layer.name]['bytes']:>6.3f}")
        decode_theirs = sum(item["decode_seconds"] for item in theirs.values())
        print(f"{'all layers':<18} {'':>8} {'':>7} {'':>4} {ours_total:>10,} {theirs_total:>10,} {ours_total / theirs_total:>6.3f}")
        print(f"decode: read_packed of the whole file {statistics.median(reads) * 1000:.0f} ms (streams, model, weights); "
              f"DeepCABAC decodeLayer of every layer {decode_theirs * 1000:.0f} ms (integer tensors only); medians of 5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
