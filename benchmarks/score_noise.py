"""How noisy is the cheap score where it matters: between the projection and the search's best plans?

The search returns the plan with the lowest of a hundred KLs, each taken on the same fixed calibration images.
If a plan's advantage over the projection moves by several percent with the choice of images, the lowest of a
hundred is partly the luckiest. This script reads a finished KL-scored search (read only) and, with no training,
scores the projection warm start and the ``--top`` best plans of the search on:

* draw 0: the search's own calibration images;
* draws 1..``--draws``: fresh draws of ``--images`` training images, none of them the search's calibration or BN
  images;

always with BN re-estimated on the search's own BN batches, so only the images change. It does this for several
output distances: KL at temperature 1 (the search's score), 2 and 4 (scaled by T²), and the mean squared
difference of the centred logits. For each plan and distance it prints the gain over the projection (percent of
the projection's distance) per draw, the gain over all fresh images pooled, and the standard deviation of the gain
across the fresh draws: the noise of one draw's verdict. A last block changes only the BN batches (KL at T=1 on the
search's own images, BN from ``--draws`` fresh batches of the search's BN size), to separate the two sources.

    python benchmarks/score_noise.py studies/search_ab56rescore/resnet56-100KB-search-s0 --top 5 --draws 7
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import REPO, machine_line
from score_holdout import run_reading_studies, scored_plans
from torch import nn

from autocompress.compress import recalibrate_bn_
from autocompress.data import DeviceLoader, TensorSet
from autocompress.engine import logits_of
from autocompress.search import load_settings
from autocompress.search._context import prepare_context
from autocompress.search._score import SCORE_BATCH_SIZE, compress_weights_

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (student logits, teacher logits) -> per image


def softened_kl(temperature: float) -> Distance:
    def distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return temperature ** 2 * F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                                           reduction="none", log_target=True).sum(1)
    return distance


def centred_logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return ((student - student.mean(1, keepdim=True)) - (teacher - teacher.mean(1, keepdim=True))).pow(2).mean(1)


DISTANCES: dict[str, Distance] = {"kl T=1 (the score)": softened_kl(1.0), "kl T=2": softened_kl(2.0),
                                  "kl T=4": softened_kl(4.0), "centred logit mse": centred_logit_mse}


def recalibrated(model: nn.Module, bn_images: TensorSet, device: torch.device) -> nn.Module:
    """A copy of ``model`` with BN re-estimated the way the score does (augmented batches, fixed order)."""
    copied = copy.deepcopy(model)
    loader = DeviceLoader(bn_images, batch_size=SCORE_BATCH_SIZE, device=device, augment=True, shuffle=False, seed=0,
                          drop_last=False)
    recalibrate_bn_(copied.to(device), loader.iter_epoch(0), num_batches=len(loader))
    return copied


def gains(per_image: dict[int, torch.Tensor], warm: int, draws: list[slice]) -> dict[int, list[float]]:
    """Each plan's gain over the projection (percent of the projection's mean distance), per draw."""
    return {number: [100 * (1 - float(values[draw].mean()) / float(per_image[warm][draw].mean())) for draw in draws]
            for number, values in per_image.items() if number != warm}


def print_block(title: str, table: dict[int, list[float]], pooled: dict[int, float] | None) -> None:
    print(f"\n{title}")
    for number, row in table.items():
        fresh = row[1:] if pooled is not None else row
        tail = f"   pooled fresh {pooled[number]:+6.1f}" if pooled is not None else ""
        spread = statistics.stdev(fresh) if len(fresh) > 1 else float("nan")
        print(f"  trial {number:3d}: " + " ".join(f"{gain:+6.1f}" for gain in row) + f"{tail}   std {spread:4.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study_dir", type=Path, help="the folder of a finished KL-scored search")
    parser.add_argument("--top", type=int, default=5, help="the search's best plans to score")
    parser.add_argument("--draws", type=int, default=7, help="fresh draws of images (and of BN batches)")
    parser.add_argument("--images", type=int, default=1024, help="images per fresh draw")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    settings = load_settings(args.study_dir / "run.yaml", {"data_dir": str(args.data_dir)})
    context = prepare_context(settings, log=lambda _: None)
    own = settings.score_settings
    print(machine_line("score_noise.py", f"{args.study_dir}, top {args.top}, {args.draws} fresh draws of {args.images} "
                                         f"images, own set {own.images} images / {own.bn_images} BN images"))
    train, device = context.splits.train, context.device
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(own.seed))  # the score's own draw
    own_images, own_bn = order[:own.images], order[own.images:own.images + own.bn_images]
    unused = order[own.images + own.bn_images:]
    fresh_images = unused[: args.images * args.draws]
    fresh_bn = unused[args.images * args.draws:][: own.bn_images * args.draws]
    images = train.subset(torch.cat([own_images, fresh_images]))
    draws = [slice(0, own.images)] + [slice(own.images + k * args.images, own.images + (k + 1) * args.images)
                                      for k in range(args.draws)]
    teacher = logits_of(context.baseline, images, device=device, batch_size=SCORE_BATCH_SIZE).float()
    plans = scored_plans(args.study_dir, settings.resolved_study_name, settings.model, args.top)
    warm = plans[0][0]
    per_image: dict[str, dict[int, torch.Tensor]] = {name: {} for name in DISTANCES}
    bn_only: dict[int, list[float]] = {}
    for number, _, _, plan in plans:
        compressed = compress_weights_(copy.deepcopy(context.baseline), plan)
        student = logits_of(recalibrated(compressed, train.subset(own_bn), device), images, device=device,
                            batch_size=SCORE_BATCH_SIZE).float()
        for name, distance in DISTANCES.items():
            per_image[name][number] = distance(student, teacher)
        own_set = train.subset(own_images)
        bn_only[number] = []
        for k in range(args.draws):
            batches = train.subset(fresh_bn[k * own.bn_images:(k + 1) * own.bn_images])
            logits = logits_of(recalibrated(compressed, batches, device), own_set, device=device, batch_size=SCORE_BATCH_SIZE)
            bn_only[number].append(float(softened_kl(1.0)(logits.float(), teacher[: own.images]).mean()))
    print("\nplans: " + ", ".join(f"trial {number} ({maker}, stored {stored:.4f})" for number, maker, stored, _ in plans))
    print("gain over the projection, % of its distance: draw 0 = the search's own images, then each fresh draw")
    pooled_slice = slice(own.images, own.images + args.images * args.draws)
    for name, values in per_image.items():
        pooled = {number: 100 * (1 - float(row[pooled_slice].mean()) / float(values[warm][pooled_slice].mean()))
                  for number, row in values.items() if number != warm}
        print_block(name, gains(values, warm, draws), pooled)
    bn_gains = {number: [100 * (1 - kl / bn_only[warm][k]) for k, kl in enumerate(row)]
                for number, row in bn_only.items() if number != warm}
    print_block("kl T=1 on the search's own images, BN from each fresh draw of BN batches (only the BN batches change)",
                bn_gains, None)


if __name__ == "__main__":
    run_reading_studies(main, "the folder of a finished KL-scored search")
