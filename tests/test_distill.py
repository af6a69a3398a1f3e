"""Knowledge distillation in fine-tuning: the loss, the teacher left untouched, the search's --distill."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from autocompress.data import DataSplits
from autocompress.engine import Distillation, train
from autocompress.errors import AutocompressError
from autocompress.runner import run_search
from tests._tiny_search import settings_for

TinyFactory = Callable[..., nn.Module]


def test_the_loss_mixes_cross_entropy_and_the_tempered_kl() -> None:
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    hard = F.cross_entropy(student, labels)
    assert torch.allclose(Distillation(nn.Identity(), weight=0.0).loss(student, teacher, labels), hard)
    # same logits: the soft term vanishes, only the hard share is left
    assert torch.allclose(Distillation(nn.Identity(), weight=0.9).loss(teacher, teacher, labels),
                          0.1 * F.cross_entropy(teacher, labels), atol=1e-6)
    # against a direct KL(p_teacher || p_student) at T = 2
    p_teacher = torch.softmax(teacher / 2, dim=1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / 2, dim=1))).sum(dim=1).mean()
    mixed = Distillation(nn.Identity(), temperature=2.0, weight=0.5).loss(student, teacher, labels)
    assert torch.allclose(mixed, 0.5 * hard + 0.5 * 4 * kl, atol=1e-5)


@pytest.mark.parametrize(("temperature", "weight"), [(0.0, 0.5), (-1.0, 0.5), (4.0, 1.5), (4.0, -0.1)])
def test_bad_settings_are_refused(temperature: float, weight: float) -> None:
    with pytest.raises(AutocompressError, match="distillation"):
        Distillation(nn.Identity(), temperature=temperature, weight=weight)


def test_fine_tuning_keeps_a_perturbed_student_near_the_teacher_and_leaves_the_teacher_alone(
    synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory
) -> None:
    teacher = make_tiny_cnn(seed=1)
    train(teacher, synthetic_splits.train, device="cpu", epochs=1, batch_size=64, progress=False)
    teacher.eval()
    frozen = copy.deepcopy(teacher.state_dict())
    images = synthetic_splits.val.images[:200].float() / 255

    def soft_gap(student: nn.Module) -> float:  # KL at T=4, what distillation minimises, on unseen images
        with torch.no_grad():
            log_p_student = torch.log_softmax(student.eval()(images) / 4, dim=1)
            log_p_teacher = torch.log_softmax(teacher(images) / 4, dim=1)
            return float(F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True))

    def perturbed_copy() -> nn.Module:  # stands for a compressed copy of the teacher
        student = copy.deepcopy(teacher)
        torch.manual_seed(5)
        with torch.no_grad():
            for parameter in student.parameters():
                parameter.add_(0.3 * parameter.std() * torch.randn_like(parameter))
        return student

    plain, distilled = perturbed_copy(), perturbed_copy()
    train(plain, synthetic_splits.train, device="cpu", epochs=0.5, batch_size=64, progress=False, seed=3)
    train(distilled, synthetic_splits.train, device="cpu", epochs=0.5, batch_size=64, progress=False, seed=3,
          distillation=Distillation(teacher))
    assert all(torch.equal(value, frozen[key]) for key, value in teacher.state_dict().items())  # BN buffers too
    assert not teacher.training
    assert soft_gap(distilled) < 0.5 * soft_gap(plain)


def test_search_with_distill_records_it_and_fine_tunes(tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, trials=1, warm_start=False, distill=True,
                            distill_temperature=2.0)
    outcome = run_search(settings, log=messages.append)
    assert any("distilled from the baseline at T=2" in message for message in messages)
    saved = yaml.safe_load((tmp_path / settings.resolved_study_name / "best.yaml").read_text())
    assert saved["result"]["settings"]["distill"] is True
    assert outcome.packed_path is not None and outcome.packed_path.stat().st_size <= settings.target_bytes


@pytest.mark.parametrize(("flags", "message"), [
    (["--set", "distill_temperature=0"], "--set distill_temperature=0: must be a number > 0, got 0"),
    (["--set", "distill_weight=1.5"], "--set distill_weight=1.5: must be a number >= 0 and <= 1, got 1.5"),
])
def test_cli_distill_flags_reach_the_settings_and_bad_values_are_refused_before_any_work(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from autocompress.cli import main

    code = main(["search", "--target-size", "50KB", "--model", "resnet20", "--output-root", str(tmp_path), *flags])
    assert code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []  # nothing written
