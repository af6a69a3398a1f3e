from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
from torch import Tensor, nn

from autocompress.data import DataSplits, TensorSet, load_cifar
from autocompress.engine import TrainResult, evaluate, predict, resolve_device, train
from autocompress.errors import AutocompressError, CheckpointError, DataError, TrainingDivergedError
from autocompress.models import build_model, load_checkpoint

TinyFactory = Callable[..., nn.Module]


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(AutocompressError, match="CUDA is not available.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(AutocompressError, match="unknown device 'tpu'"):
        resolve_device("tpu")


class _ConstantClass(nn.Module):
    """Predicts class ``label`` for every image; records whether it ran in training mode."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label
        self.seen_training: list[bool] = []
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x: Tensor) -> Tensor:
        self.seen_training.append(self.training)
        assert x.dtype == torch.float32 and float(x.max()) <= 1.0
        logits = self.bias.expand(len(x), 10).clone()
        logits[:, self.label] = 1.0
        return logits


def test_predict_and_evaluate_count_exactly(synthetic_splits: DataSplits) -> None:
    model = _ConstantClass(3).train()
    test = synthetic_splits.test
    predicted = predict(model, test.images, device="cpu", batch_size=128)
    assert predicted.dtype == torch.int64 and predicted.shape == (500,) and predicted.device.type == "cpu"
    assert (predicted == 3).all()
    assert len(model.seen_training) == 4 and not any(model.seen_training)  # 128+128+128+116, eval mode
    assert model.training  # mode restored
    expected = int((test.labels == 3).sum()) / 500
    assert evaluate(model, test, device="cpu", batch_size=333) == expected == 0.1


def test_evaluate_refuses_an_empty_set() -> None:
    empty = TensorSet(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(DataError, match="empty"):
        evaluate(_ConstantClass(0), empty, device="cpu")


def test_train_learns_synthetic_data(synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory) -> None:
    model = make_tiny_cnn()
    reports: list[tuple[int, float | None]] = []
    result = train(
        model,
        synthetic_splits.train,
        device="cpu",
        epochs=2,
        batch_size=64,
        val_set=synthetic_splits.val,
        progress=False,
        on_epoch_end=lambda epoch, acc: reports.append((epoch, acc)),
    )
    assert isinstance(result, TrainResult)
    assert result.epochs_done == 2.0 and result.steps_done == 2 * (1800 // 64)
    assert [epoch for epoch, _ in reports] == [0, 1]
    assert result.val_accuracy == reports[-1][1] == evaluate(model, synthetic_splits.val, device="cpu")
    assert result.val_accuracy is not None and result.val_accuracy > 0.6  # chance is 0.1
    assert evaluate(model, synthetic_splits.test, device="cpu") > 0.6
    assert 0 < result.final_loss < math.log(10) and result.wall_seconds > 0


def test_fractional_epochs_take_ceil_steps(synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory) -> None:
    calls: list[int] = []
    result = train(
        make_tiny_cnn(), synthetic_splits.train, device="cpu", epochs=0.3, batch_size=128,
        progress=False, on_epoch_end=lambda epoch, acc: calls.append(epoch),
    )
    steps_per_epoch = 1800 // 128
    assert result.steps_done == math.ceil(0.3 * steps_per_epoch) == 5
    assert result.epochs_done == pytest.approx(5 / steps_per_epoch)
    assert calls == [0] and result.val_accuracy is None


def test_callback_exceptions_propagate(synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory) -> None:
    class Prune(Exception):
        pass

    def prune(epoch: int, accuracy: float | None) -> None:
        raise Prune(f"pruned after epoch {epoch}")

    with pytest.raises(Prune, match="pruned after epoch 0"):
        train(make_tiny_cnn(), synthetic_splits.train, device="cpu", epochs=0.2, progress=False, on_epoch_end=prune)


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.mean(dim=(2, 3))) * float("nan")


def test_nan_loss_raises_with_the_step(synthetic_splits: DataSplits) -> None:
    with pytest.raises(TrainingDivergedError, match="nan at step 1;.*--lr"):
        train(_Exploding(), synthetic_splits.train, device="cpu", epochs=1, progress=False)


def test_invalid_settings_are_refused(synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory) -> None:
    with pytest.raises(AutocompressError, match="epochs must be a positive number, got 0"):
        train(make_tiny_cnn(), synthetic_splits.train, device="cpu", epochs=0, progress=False)


def test_interrupted_training_resumes_to_the_same_weights(
    synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory, tmp_path: Path
) -> None:
    settings = dict(device="cpu", epochs=2, batch_size=128, seed=5, progress=False, val_set=synthetic_splits.val)
    straight = make_tiny_cnn(seed=1)
    expected = train(straight, synthetic_splits.train, **settings)  # type: ignore[arg-type]

    def interrupt(epoch: int, accuracy: float | None) -> None:
        raise KeyboardInterrupt

    checkpoint = tmp_path / "run" / "train_state.pt"
    with pytest.raises(KeyboardInterrupt):
        train(make_tiny_cnn(seed=1), synthetic_splits.train, checkpoint_path=checkpoint, on_epoch_end=interrupt, **settings)  # type: ignore[arg-type]
    assert checkpoint.is_file()

    resumed_epochs: list[int] = []
    resumed = make_tiny_cnn(seed=99)  # a fresh model: everything comes from the checkpoint
    result = train(
        resumed, synthetic_splits.train, checkpoint_path=checkpoint,
        on_epoch_end=lambda epoch, acc: resumed_epochs.append(epoch), **settings,  # type: ignore[arg-type]
    )
    assert resumed_epochs == [1]
    assert result.epochs_done == 2.0 and result.val_accuracy == expected.val_accuracy
    assert result.final_loss == pytest.approx(expected.final_loss, rel=1e-5)
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-5), key

    finished = train(make_tiny_cnn(seed=7), synthetic_splits.train, checkpoint_path=checkpoint, **settings)  # type: ignore[arg-type]
    assert finished.epochs_done == 2.0 and finished.val_accuracy == expected.val_accuracy

    other = make_tiny_cnn()
    extra = load_checkpoint(other, checkpoint)  # a training state is also a model checkpoint
    assert extra["epoch"] == 2 and extra["format"] == "autocompress/train-state"

    with pytest.raises(CheckpointError, match="belongs to another run.*delete the file"):
        train(make_tiny_cnn(), synthetic_splits.train, checkpoint_path=checkpoint, **{**settings, "epochs": 3})  # type: ignore[arg-type]


class _Mask(nn.Module):
    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def test_training_through_parametrized_weights(synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory) -> None:
    model = make_tiny_cnn()
    conv = model[3]
    mask = (torch.rand_like(conv.weight) > 0.5).float()
    parametrize.register_parametrization(conv, "weight", _Mask(mask))
    before = conv.parametrizations.weight.original.detach().clone()
    result = train(model, synthetic_splits.train, device="cpu", epochs=1, batch_size=64, progress=False)
    assert math.isfinite(result.final_loss)
    assert not torch.equal(conv.parametrizations.weight.original, before)  # the original trained
    assert (conv.weight[mask == 0] == 0).all()  # the forward weight stays masked
    assert evaluate(model, synthetic_splits.val, device="cpu") > 0.3


@pytest.fixture(scope="module")
def real_test_set(shared_dir: Path) -> TensorSet:
    arrays = load_cifar("cifar10", shared_dir / "data", download=False)
    return TensorSet(arrays.test_images, arrays.test_labels)


@pytest.mark.realdata
def test_pretrained_resnet20_reaches_its_published_accuracy(shared_dir: Path, real_test_set: TensorSet) -> None:
    model = build_model("resnet20")
    load_checkpoint(model, shared_dir / "weights/akamaster/resnet20-12fca82f.th")
    assert evaluate(model, real_test_set, device="cpu") == pytest.approx(0.9173, abs=1e-4)


@pytest.mark.realdata
@pytest.mark.slow
def test_pretrained_resnet56_reaches_its_published_accuracy(shared_dir: Path, real_test_set: TensorSet) -> None:
    model = build_model("resnet56")
    load_checkpoint(model, shared_dir / "weights/akamaster/resnet56-4bfd9763.th")
    assert evaluate(model, real_test_set, device="cpu") == pytest.approx(0.9339, abs=1e-4)


def test_on_step_is_called_after_every_step_with_the_global_step(synthetic_splits, make_tiny_cnn) -> None:
    steps: list[int] = []
    train(make_tiny_cnn(), synthetic_splits.train, device="cpu", epochs=1.5, batch_size=256, progress=False,
          on_step=steps.append)
    steps_per_epoch = len(synthetic_splits.train) // 256
    assert steps == list(range(1, math.ceil(1.5 * steps_per_epoch) + 1))


def _conv_output_dtypes(model: nn.Module) -> tuple[list[torch.dtype], list[torch.utils.hooks.RemovableHandle]]:
    seen: list[torch.dtype] = []
    handles = [module.register_forward_hook(lambda _m, _i, output: seen.append(output.dtype))
               for module in model.modules() if isinstance(module, nn.Conv2d)]
    return seen, handles


@pytest.mark.parametrize(("precision", "native", "expected"), [
    ("fp32", True, torch.float32), ("auto", False, torch.float32), ("auto", True, torch.bfloat16), ("bf16", False, torch.bfloat16)])
def test_training_precision_on_the_cpu(
    synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory, monkeypatch: pytest.MonkeyPatch,
    precision: str, native: bool, expected: torch.dtype
) -> None:
    """On a CPU, ``auto`` trains in bf16 where the CPU has bf16 instructions (``native``) and in fp32 where it
    has not; ``bf16`` runs the steps' convolutions in bf16 on any CPU. Either way the weights stay fp32, the
    model still learns, and it comes back in the default memory format (evaluation stays fp32)."""
    monkeypatch.setattr("autocompress.engine._device.native_bf16", lambda device: native)
    model = make_tiny_cnn()
    seen, handles = _conv_output_dtypes(model)
    result = train(model, synthetic_splits.train, device="cpu", epochs=2, batch_size=64, progress=False, precision=precision)
    for handle in handles:
        handle.remove()
    assert seen and set(seen) == {expected}
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert all(parameter.is_contiguous() for parameter in model.parameters())
    assert result.final_loss < math.log(10)
    assert evaluate(model, synthetic_splits.test, device="cpu") > 0.6  # chance is 0.1


def test_bf16_training_resumes_to_the_same_weights(
    synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory, tmp_path: Path
) -> None:
    settings = dict(device="cpu", epochs=2, batch_size=128, seed=3, progress=False, precision="bf16")
    straight = make_tiny_cnn(seed=1)
    train(straight, synthetic_splits.train, **settings)  # type: ignore[arg-type]

    def interrupt(epoch: int, accuracy: float | None) -> None:
        raise KeyboardInterrupt

    checkpoint = tmp_path / "train_state.pt"
    with pytest.raises(KeyboardInterrupt):
        train(make_tiny_cnn(seed=1), synthetic_splits.train, checkpoint_path=checkpoint, on_epoch_end=interrupt, **settings)  # type: ignore[arg-type]
    resumed = make_tiny_cnn(seed=99)
    train(resumed, synthetic_splits.train, checkpoint_path=checkpoint, **settings)  # type: ignore[arg-type]
    for key, value in straight.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-5), key


def test_unknown_precision_is_refused(synthetic_splits: DataSplits, make_tiny_cnn: TinyFactory) -> None:
    with pytest.raises(AutocompressError, match="unknown precision 'fp16'; use one of auto, fp32, bf16"):
        train(make_tiny_cnn(), synthetic_splits.train, device="cpu", epochs=1, progress=False, precision="fp16")


def test_auto_precision_is_bf16_on_cuda_and_on_cpus_with_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    from autocompress.engine._device import resolved_precision, trains_in_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native in (False, True):
        monkeypatch.setattr("autocompress.engine._device.native_bf16", lambda device, native=native: native)
        assert trains_in_bf16(cpu, "auto") is native and trains_in_bf16(cuda, "auto")
        assert trains_in_bf16(cpu, "bf16") and trains_in_bf16(cuda, "bf16")
        assert not trains_in_bf16(cpu, "fp32") and not trains_in_bf16(cuda, "fp32")
        assert resolved_precision(cpu, "auto") == ("bf16" if native else "fp32")


def test_bf16_instructions_are_read_from_the_cpu_flags() -> None:
    from autocompress.engine._device import cpu_flags_have_bf16

    epyc = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 vaes\n"
    sapphire = "flags\t\t: fpu avx512f amx_bf16 amx_tile\n"
    skylake = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512dq\nbugs\t\t: avx512_bf16_is_not_a_flag_here\n"
    assert cpu_flags_have_bf16(epyc) and cpu_flags_have_bf16(sapphire)
    assert not cpu_flags_have_bf16(skylake)  # AVX-512 without bf16: oneDNN would emulate it, slower than fp32
    assert not cpu_flags_have_bf16("")  # no /proc/cpuinfo (not Linux): fp32
