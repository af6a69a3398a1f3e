"""Carry CIFAR-10 to a machine that cannot download it, losslessly, in pieces small enough for the device tool.

The device tool moves at most 64 MiB a call and CIFAR-10's python batches are 178 MB (lossless WebP
brings them to 102 MB), so the data set travels in two calls. ``pack`` writes each batch as two
lossless WebP mosaics of 5,000 images (50 x 100 tiles of 32 x 32 pixels) plus ``labels.json``;
``unpack`` rebuilds the official ``cifar-10-batches-py`` layout from them and checks every image
count and label, so the rebuilt pickles hold exactly the original arrays (``pack`` decodes each
mosaic again and compares it with the source before it keeps it).

    python benchmarks/cifar_carry.py pack --data-dir ../shared/data --out .gpu/parts
    python benchmarks/cifar_carry.py unpack --parts .gpu/a .gpu/b --out /tmp/data     # on the device machine
    python benchmarks/cifar_carry.py unpack --parts .gpu/a --stand-in --out /tmp/standin  # a rehearsal's data

``--stand-in`` builds the layout from the parts at hand, each missing training batch a copy of the
first whole one: a data set of the real size for timing and rehearsing the code path, whose
accuracies mean nothing. The device script (``benchmarks/gpu_device.sh``) uses it while the second
half of the data set is still on its way.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image

BATCHES = ("test_batch", *(f"data_batch_{index}" for index in range(1, 6)))
IMAGES_PER_BATCH = 10_000
IMAGES_PER_PART = 5_000
TILES_DOWN, TILES_ACROSS, SIDE = 50, 100, 32


def fail(message: str) -> NoReturn:
    """One ``error:`` line on stderr and exit status 2, like the command line's bad-input errors."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def to_mosaic(rows: np.ndarray) -> np.ndarray:
    """CIFAR rows ``[5000, 3072]`` (channel-major 32x32 images) as one ``[1600, 3200, 3]`` RGB image."""
    images = rows.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    tiles = images.reshape(TILES_DOWN, TILES_ACROSS, SIDE, SIDE, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(tiles.reshape(TILES_DOWN * SIDE, TILES_ACROSS * SIDE, 3))


def from_mosaic(mosaic: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_mosaic`."""
    tiles = mosaic.reshape(TILES_DOWN, SIDE, TILES_ACROSS, SIDE, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(tiles.reshape(-1, SIDE, SIDE, 3).transpose(0, 3, 1, 2).reshape(-1, 3 * SIDE * SIDE))


def pack(data_dir: Path, out: Path) -> None:
    source = data_dir / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, dict[str, object]] = {}
    for name in BATCHES:
        with open(source / name, "rb") as handle:
            entry = pickle.load(handle, encoding="bytes")
        rows = np.asarray(entry[b"data"], dtype=np.uint8)
        labels[name] = {"labels": [int(label) for label in entry[b"labels"]], "batch_label": entry[b"batch_label"].decode(),
                        "filenames": [file_name.decode() for file_name in entry[b"filenames"]]}
        for part in range(IMAGES_PER_BATCH // IMAGES_PER_PART):
            mosaic = to_mosaic(rows[part * IMAGES_PER_PART:(part + 1) * IMAGES_PER_PART])
            path = out / f"{name}.{part}.webp"
            Image.fromarray(mosaic).save(path, format="WEBP", lossless=True, quality=100, method=6)
            if not np.array_equal(np.asarray(Image.open(path).convert("RGB")), mosaic):
                fail(f"{path} does not decode to the images it was made of")
            print(f"{path.name}: {path.stat().st_size:,} B", flush=True)
    (out / "labels.json").write_text(json.dumps(labels))
    shutil.copy(source / "batches.meta", out / "batches.meta")


def unpack(parts: list[Path], out: Path, *, stand_in: bool = False) -> None:
    def find(file_name: str) -> Path:
        for folder in parts:
            if (folder / file_name).exists():
                return folder / file_name
        fail(f"{file_name} is in none of {', '.join(map(str, parts))}; carry every part")

    target = out / "cifar-10-batches-py"
    target.mkdir(parents=True, exist_ok=True)
    labels = json.loads(find("labels.json").read_text())
    whole = [name for name in BATCHES if all(any((folder / f"{name}.{part}.webp").exists() for folder in parts)
                                             for part in range(IMAGES_PER_BATCH // IMAGES_PER_PART))]
    for name in BATCHES:
        if stand_in and name not in whole:
            if name == "test_batch" or len(whole) < 2:
                fail("a stand-in needs the test batch and one whole training batch")
            shutil.copy(target / whole[1], target / name)  # whole[0] is the test batch
            continue
        rows = np.concatenate([from_mosaic(np.asarray(Image.open(find(f"{name}.{part}.webp")).convert("RGB")))
                               for part in range(IMAGES_PER_BATCH // IMAGES_PER_PART)])
        meta = labels[name]
        if rows.shape != (IMAGES_PER_BATCH, 3072) or len(meta["labels"]) != IMAGES_PER_BATCH:
            fail(f"{name} rebuilt as {rows.shape} with {len(meta['labels'])} labels")
        entry = {b"batch_label": meta["batch_label"].encode(), b"labels": meta["labels"], b"data": rows,
                 b"filenames": [file_name.encode() for file_name in meta["filenames"]]}
        with open(target / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=4)
    shutil.copy(find("batches.meta"), target / "batches.meta")
    copies = sorted(set(BATCHES) - set(whole)) if stand_in else []
    print(f"rebuilt {target} from {len(parts)} folder(s)" + (f"; stand-ins: {', '.join(copies)}" if copies else ""), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="CIFAR-10 python batches -> lossless WebP parts")
    packing.add_argument("--data-dir", type=Path, required=True)
    packing.add_argument("--out", type=Path, required=True)
    unpacking = commands.add_parser("unpack", help="WebP parts (in one or more folders) -> CIFAR-10 python batches")
    unpacking.add_argument("--parts", type=Path, nargs="+", required=True)
    unpacking.add_argument("--out", type=Path, required=True)
    unpacking.add_argument("--stand-in", action="store_true", help="copy the first whole training batch into missing ones")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data_dir, args.out)
    else:
        unpack(args.parts, args.out, stand_in=args.stand_in)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
