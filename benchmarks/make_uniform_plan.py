"""Write a uniform plan YAML: one sparsity, bit-width and quantizer for every compressible layer.

    python benchmarks/make_uniform_plan.py resnet20 0 8 uniform r20_u8.yaml
    python benchmarks/make_uniform_plan.py resnet18 0.93 4 clipq r18_s93_b4.yaml

The same as, in Python::

    Plan.uniform(compressible_layers(build_model(MODEL)), sparsity=SPARSITY, bits=BITS,
                 quantizer=QUANTIZER, model=MODEL).save(OUT)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autocompress.compress import compressible_layers
from autocompress.errors import AutocompressError
from autocompress.models import build_model
from autocompress.plan import QUANTIZERS, Plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="registered model name (resnet20, resnet56, resnet18, ...)")
    parser.add_argument("sparsity", type=float, help="fraction of each layer's weights pruned, in [0, 1)")
    parser.add_argument("bits", type=int, help="code width, 1..8")
    parser.add_argument("quantizer", choices=QUANTIZERS)
    parser.add_argument("out", type=Path, help="plan YAML to write")
    parser.add_argument("--num-classes", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        layers = compressible_layers(build_model(args.model, num_classes=args.num_classes))
        plan = Plan.uniform(layers, sparsity=args.sparsity, bits=args.bits, quantizer=args.quantizer, model=args.model)
        plan.save(args.out)
    except AutocompressError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(layers)} layers of {args.model}, sparsity {args.sparsity:g}, {args.bits} bits, {args.quantizer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
