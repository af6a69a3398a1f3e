"""Knowledge distillation: a compressed student learns from the uncompressed model's soft outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autocompress.errors import AutocompressError
from autocompress.settings import distillation_problem


@dataclass(frozen=True)
class Distillation:
    """Fine-tuning loss ``(1 - weight) * CE(student, labels) + weight * T^2 * KL(teacher_T || student_T)``.

    ``teacher`` is run in eval mode without gradients on the same (augmented) batch as the
    student; its BN statistics and weights are never changed. The ``T^2`` factor keeps the soft
    term's gradients on the scale of the hard one (Hinton et al. 2015). With ``weight`` 0 this
    is plain cross-entropy.
    """

    teacher: nn.Module
    temperature: float = 4.0
    weight: float = 0.9

    def __post_init__(self) -> None:
        problem = distillation_problem(self.temperature, self.weight)
        if problem:
            raise AutocompressError(problem)

    @torch.no_grad()
    def teacher_logits(self, images: Tensor) -> Tensor:
        """The teacher's logits for ``images`` (the caller keeps the teacher in eval mode)."""
        return self.teacher(images)

    def loss(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        """The combined loss, computed in fp32."""
        student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
        hard = F.cross_entropy(student_logits, labels)
        if self.weight == 0:
            return hard
        temperature = self.temperature
        soft = F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.log_softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return (1 - self.weight) * hard + self.weight * temperature**2 * soft
