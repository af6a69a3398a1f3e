"""The same plan on the same weights in packed format 1 and format 2: bytes, against the entropy bound.

Each file given (any format) is read back and its codes written again in both formats with ``write_packed``
(the same quantized codes, so the same model); the script prints both sizes, their ratio, and where format 2
stands against the bound that ``autocompress inspect`` reports for the same codes (enumerative masks +
empirical code entropy, the tables and the rest of the file as stored). Issue 40's bars: format 2 at most
0.88x format 1 on the main job's plan, and within 5 % of the bound.

    python benchmarks/format_bytes.py studies/default_ab/{old,new}-s{0,1,2}/best.acz
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _common import machine_line

from autocompress.pack import inspect_packed, read_packed, write_packed


def both_formats(path: Path, folder: Path) -> tuple[int, int, float]:
    """Bytes of format 1 and format 2 for the file's codes, and the entropy bound of the format-2 file."""
    packed = read_packed(path)
    sizes = {}
    for version in (1, 2):
        out = folder / f"v{version}.acz"
        report = write_packed(out, packed.model, packed.quantized, model_spec=packed.model_spec,
                              num_classes=packed.num_classes, version=version)
        assert report.total == out.stat().st_size
        sizes[version] = report.total
    bound = inspect_packed(folder / "v2.acz").totals()["file_bound_bytes"]
    return sizes[1], sizes[2], float(bound)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    print(machine_line("format_bytes"))
    print(f"{'file':<44} {'format 1 B':>10} {'format 2 B':>10} {'2 / 1':>6} {'bound B':>9} {'2 / bound':>9}")
    ratios, over_bound = [], []
    with tempfile.TemporaryDirectory() as folder:
        for path in args.files:
            old, new, bound = both_formats(path, Path(folder))
            ratios.append(new / old)
            over_bound.append(new / bound)
            print(f"{path!s:<44} {old:>10,} {new:>10,} {new / old:>6.3f} {bound:>9,.0f} {new / bound:>9.3f}")
    if len(ratios) > 1:
        print(f"\nformat 2 / format 1: mean {statistics.fmean(ratios):.3f}, from {min(ratios):.3f} to {max(ratios):.3f}; "
              f"format 2 / bound: from {min(over_bound):.3f} to {max(over_bound):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
