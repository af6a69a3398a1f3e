"""The cheap score of a plan: how far its compressed model's outputs are from the uncompressed model's.

Compress a copy of the baseline with the plan (no training), re-estimate its batch-norm statistics on a
few augmented training batches, then average ``KL(teacher || student)`` over a fixed, seeded set of
training images, the teacher being the uncompressed baseline. It needs no labels, so it works on the
images the baseline was trained on (the pretrained models saw the validation split too, where accuracy
saturates), and it does not saturate: every change of the weights moves it. Lower is better.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.compress import compressible_layers, dequantize, quantize, recalibrate_bn_
from autocompress.data import DeviceLoader, TensorSet
from autocompress.engine import logits_of
from autocompress.plan import Plan

SCORE_BATCH_SIZE = 256


@dataclass(frozen=True)
class ScoreSettings:
    """How the cheap score is taken (the defaults measured in ``benchmarks/score_ranking.py``)."""

    images: int = 1024  # training images the KL is averaged over (fixed by ``seed``)
    bn_images: int = 512  # augmented training images behind the re-estimated BN statistics
    seed: int = 0


@dataclass(frozen=True)
class PlanScore:
    """A model's distance from the baseline on the calibration images."""

    kl: float  # mean KL(teacher || student) in nats per image
    agreement: float  # share of images where the student's top-1 equals the teacher's
    seconds: float


class PlanScorer:
    """Scores plans (or already compressed models) against the baseline on fixed calibration images.

    The calibration images and the BN batches are drawn once from ``train_set`` with ``settings.seed``,
    and the teacher's log-probabilities are computed once, so every score is comparable."""

    def __init__(self, baseline: nn.Module, train_set: TensorSet, *, device: torch.device,
                 settings: ScoreSettings | None = None) -> None:
        self.settings = settings or ScoreSettings()
        self.baseline = baseline
        self.device = device
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(self.settings.seed))
        images = min(self.settings.images, len(train_set))
        self.calibration = train_set.subset(order[:images])
        self.bn_set = train_set.subset(order[images:images + self.settings.bn_images] if len(order) > images else order[:images])
        teacher_logits = logits_of(baseline, self.calibration, device=device, batch_size=SCORE_BATCH_SIZE)
        self.teacher = F.log_softmax(teacher_logits, dim=1)

    def score_plan(self, plan: Plan) -> PlanScore:
        """Compress a copy of the baseline under ``plan``, re-estimate its BN statistics, and score it."""
        started = time.perf_counter()
        student = copy.deepcopy(self.baseline)
        compress_weights_(student, plan)
        self.recalibrate_(student)
        return self._measure(student, started)

    def score_model(self, model: nn.Module) -> PlanScore:
        """Score a model as it is (e.g. one fine-tuned and hardened under its plan)."""
        return self._measure(model, time.perf_counter())

    def recalibrate_(self, model: nn.Module) -> None:
        """Re-estimate ``model``'s BN statistics on the fixed augmented BN batches (in place)."""
        loader = DeviceLoader(self.bn_set, batch_size=SCORE_BATCH_SIZE, device=self.device, augment=True, shuffle=False,
                              seed=self.settings.seed, drop_last=False)
        recalibrate_bn_(model.to(self.device), loader.iter_epoch(0), num_batches=len(loader))

    def _measure(self, student: nn.Module, started: float) -> PlanScore:
        logits = logits_of(student, self.calibration, device=self.device, batch_size=SCORE_BATCH_SIZE)
        log_probs = F.log_softmax(logits, dim=1)
        kl = F.kl_div(log_probs, self.teacher, reduction="batchmean", log_target=True)
        agreement = (log_probs.argmax(1) == self.teacher.argmax(1)).float().mean()
        return PlanScore(kl=float(kl), agreement=float(agreement), seconds=time.perf_counter() - started)


def compress_weights_(model: nn.Module, plan: Plan) -> nn.Module:
    """Replace each plan layer's weight by its pruned-and-quantized values (in place); BN untouched."""
    layers = compressible_layers(model)
    with torch.no_grad():
        for name, setting in plan.layers.items():
            weight = layers[name].weight
            weight.copy_(dequantize(quantize(weight, setting)).to(weight.dtype))
    return model
