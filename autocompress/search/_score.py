"""The cheap score of a plan: how far its compressed model's outputs are from the uncompressed model's.

Compress a copy of the baseline with the plan (no training), re-estimate its batch-norm statistics on a
few augmented training batches, then average ``KL(teacher || student)`` over a fixed, seeded set of
training images, the teacher being the uncompressed baseline. It needs no labels, so it works on the
images the baseline was trained on (the pretrained models saw the validation split too, where accuracy
saturates), and it does not saturate: every change of the weights moves it. Lower is better.

``temperature`` T > 1 softens both outputs by T (the KL is scaled by T², as in distillation). At T = 1 the KL
of a heavily compressed model is dominated by the few images it gets confidently wrong, so which images the
fixed set holds moves a plan's score by several percent and a hundred proposals find plans that suit those
images (measured in ``benchmarks/score_noise.py``); a softened KL weighs every image's whole output and is
several times less noisy.

``steps`` > 0 first runs that many distillation steps (the student's full-precision weights learning
the teacher's soft outputs under the plan's fake quantization), for plans so compressed that the
training-free score ranks them poorly.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.compress import compressible_layers, dequantize, quantize, recalibrate_bn_
from autocompress.data import DeviceLoader, TensorSet
from autocompress.engine import Distillation, logits_of
from autocompress.errors import DataError
from autocompress.pipeline import finetune_under_plan_
from autocompress.plan import Plan

SCORE_BATCH_SIZE = 256


@dataclass(frozen=True)
class TrialObjective:
    """What a study's trials are scored by: the metric's name in the storage and its direction."""

    metric: str
    direction: str  # "maximize" or "minimize"
    summary: str


TRIAL_SCORES: dict[str, TrialObjective] = {
    "val_accuracy": TrialObjective("val_accuracy", "maximize",
                                   "validation top-1 after a short in-parallel pruning-quantization fine-tune per trial"),
    "kl": TrialObjective("kl_to_baseline", "minimize",
                         "KL(baseline || compressed) on fixed training images after BN re-estimation, no training; "
                         "the best few plans are then fine-tuned briefly and scored again"),
}


@dataclass(frozen=True)
class ScoreSettings:
    """How the cheap score is taken (the defaults measured in ``benchmarks/score_ranking.py``)."""

    images: int = 1024  # training images the KL is averaged over (fixed by ``seed``)
    bn_images: int = 512  # augmented training images behind the re-estimated BN statistics
    steps: int = 0  # distillation steps under the plan before scoring (0: none)
    temperature: float = 1.0  # of the KL (both outputs divided by it, the KL multiplied by its square)
    lr: float = 0.01  # of those steps
    seed: int = 0


@dataclass(frozen=True)
class PlanScore:
    """A model's distance from the baseline on the calibration images."""

    kl: float  # mean KL(teacher || student) in nats per image, at the settings' temperature (times its square)
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
        self.unused = train_set.subset(order[images + self.settings.bn_images:])  # neither calibration nor BN images
        self.train_images = len(train_set)
        teacher_logits = logits_of(baseline, self.calibration, device=device, batch_size=SCORE_BATCH_SIZE)
        self.teacher = F.log_softmax(teacher_logits / self.settings.temperature, dim=1)

    def fresh(self, images: int, *, seed: int) -> PlanScorer:
        """A scorer with the same settings on ``images`` other training images (and BN batches), none of them
        among this scorer's own: a plan chosen as the best of many by this scorer is scored there without the
        luck of the draw that made it look best."""
        if len(self.unused) < 2:
            raise DataError(f"no training images are left for the re-score: the score's own images and BN batches use "
                            f"all {self.train_images} training images; "
                            "lower --score-images or --score-bn-images")
        # at most half the unused images score, so the fresh scorer's BN batches are fresh too
        settings = dataclasses.replace(self.settings, images=min(images, len(self.unused) // 2), seed=seed)
        return PlanScorer(self.baseline, self.unused, device=self.device, settings=settings)

    def score_plan(self, plan: Plan) -> PlanScore:
        """Compress a copy of the baseline under ``plan`` (after ``settings.steps`` distillation steps, if any),
        re-estimate its BN statistics, and score it."""
        started = time.perf_counter()
        student = copy.deepcopy(self.baseline)
        if self.settings.steps > 0:
            self._distil_(student, plan)
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

    def _distil_(self, student: nn.Module, plan: Plan) -> None:
        batch_size = min(128, len(self.bn_set))
        epochs = self.settings.steps * batch_size / len(self.bn_set)
        finetune_under_plan_(student, plan, self.bn_set, device=self.device, epochs=epochs, lr=self.settings.lr,
                             batch_size=batch_size, seed=self.settings.seed, progress=False,
                             distillation=Distillation(self.baseline, temperature=1.0, weight=1.0))

    def _measure(self, student: nn.Module, started: float) -> PlanScore:
        temperature = self.settings.temperature
        logits = logits_of(student, self.calibration, device=self.device, batch_size=SCORE_BATCH_SIZE)
        log_probs = F.log_softmax(logits / temperature, dim=1)
        kl = temperature ** 2 * F.kl_div(log_probs, self.teacher, reduction="batchmean", log_target=True)
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
