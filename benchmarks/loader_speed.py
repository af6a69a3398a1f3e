"""Is the device-resident loader faster than torchvision's DataLoader, and by how much?

Both produce the same thing: shuffled training batches of CIFAR-10 as float
images in [0, 1] (normalisation is the model's first layer) with a random crop
(4-pixel zero padding) and a random horizontal flip.

* ``DeviceLoader``: the uint8 images sit on the device once; each batch is one
  index, two gathers (crop, flip) and one conversion, for the whole batch.
* ``DataLoader`` over ``torchvision.datasets.CIFAR10`` with
  ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()`` and ``ToTensor()``,
  per image in Python, with ``num_workers`` 0 and 2 (this machine has 2 cores;
  workers are persistent so their start-up is not timed).

The timing is interleaved: each round draws ``--batches`` batches from every
loader in turn (order rotated per round), and the ratio reported is the median
over rounds of (DeviceLoader images/s) / (DataLoader images/s). The bar (issue 5)
is >= 3x against the faster DataLoader setting.

The copies of CIFAR-10 in ../shared/data fail torchvision's md5 check (their
per-image file names are placeholders, see its README); the torchvision data set
here skips that check and otherwise reads the files with torchvision's own code.

    python benchmarks/loader_speed.py            # 8 rounds of 40 batches of 128
    python benchmarks/loader_speed.py --quick    # 4 rounds of 20 batches

Exit code 1 if the ratio is under the bar.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from _common import machine_line, verdict
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from autocompress.data import DeviceLoader, TensorSet, load_cifar

REPO_ROOT = Path(__file__).resolve().parents[1]
RATIO_BAR = 3.0


class UncheckedCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without the md5 check (see the module docstring)."""

    def _check_integrity(self) -> bool:
        return True


def endless(make_iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from make_iterator()


def torchvision_loader(data_dir: Path, batch_size: int, workers: int) -> DataLoader:
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    dataset = UncheckedCIFAR10(str(data_dir), train=True, transform=augment, download=False)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0, drop_last=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 rounds of 20 batches")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batches", type=int, default=None, help="batches per loader per round")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 8)
    batches = args.batches or (20 if args.quick else 40)
    arrays = load_cifar("cifar10", args.data_dir, download=False)
    train_set = TensorSet(arrays.train_images, arrays.train_labels)
    print(machine_line("loader_speed"))
    print(f"# CIFAR-10 train ({len(train_set):,} images), batch {args.batch_size}, {rounds} rounds x {batches} batches per loader\n")
    device_loader = DeviceLoader(
        train_set, batch_size=args.batch_size, device="cpu", augment=True, shuffle=True, seed=0, drop_last=True
    )
    single_process = torchvision_loader(args.data_dir, args.batch_size, 0)
    two_workers = torchvision_loader(args.data_dir, args.batch_size, 2)  # persistent workers: one object, many epochs
    loaders = {
        "DeviceLoader": endless(lambda: iter(device_loader)),
        "DataLoader workers=0": endless(lambda: iter(single_process)),
        "DataLoader workers=2": endless(lambda: iter(two_workers)),
    }
    for iterator in loaders.values():  # warm-up: start workers, fill caches
        for _ in range(3):
            next(iterator)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    names = list(loaders)
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            started = time.perf_counter()
            images_seen = 0
            for _ in range(batches):
                _, labels = next(loaders[name])
                images_seen += len(labels)
            rates[name].append(images_seen / (time.perf_counter() - started))
    header = f"{'loader':<22} {'median img/s':>13} {'min':>9} {'max':>9} {'DeviceLoader / this':>20}"
    print(header)
    print("-" * len(header))
    ratios: dict[str, float] = {}
    for name in names:
        per_round = [fast / other for fast, other in zip(rates["DeviceLoader"], rates[name])]
        ratios[name] = statistics.median(per_round)
        print(
            f"{name:<22} {statistics.median(rates[name]):>13,.0f} {min(rates[name]):>9,.0f} {max(rates[name]):>9,.0f} "
            f"{ratios[name]:>19.2f}x"
        )
    worst = min(ratio for name, ratio in ratios.items() if name != "DeviceLoader")
    return verdict(worst >= RATIO_BAR, f"DeviceLoader is {worst:.1f}x the faster DataLoader setting (bar >= {RATIO_BAR:g}x)")


if __name__ == "__main__":
    sys.exit(main())
