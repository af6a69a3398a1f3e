from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
from torch import Tensor, nn

from autocompress.errors import CheckpointError, ModelSpecError
from autocompress.models import (
    CifarResNet,
    Normalize,
    build_model,
    list_models,
    load_checkpoint,
    register_model,
    save_checkpoint,
)

HE_RESNETS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
REGISTERED = sorted(list_models())
AKAMASTER = Path("weights/akamaster")


def conv_linear_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_registry_holds_the_zoo() -> None:
    assert {"resnet18", *HE_RESNETS} <= set(list_models())


def test_resnet18_has_the_kuangliu_parameter_count() -> None:
    model = build_model("resnet18")
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert isinstance(model.layer2[0].shortcut, nn.Sequential)
    assert [type(m) for m in model.layer2[0].shortcut] == [nn.Conv2d, nn.BatchNorm2d]
    assert model.layer2[0].shortcut[0].kernel_size == (1, 1)
    assert len(model.layer1[0].shortcut) == 0
    assert model.linear.in_features == 512


@pytest.mark.parametrize("name", list(HE_RESNETS))
def test_he_resnets_have_6n_plus_2_layers(name: str) -> None:
    model = build_model(name)
    n = HE_RESNETS[name]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 6 * n + 2  # + the linear layer
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == 0


def test_he_resnet_weight_counts_match_the_checkpoints() -> None:
    assert conv_linear_weights(build_model("resnet20")) == 268_336
    assert conv_linear_weights(build_model("resnet56")) == 848_944


@pytest.mark.parametrize("name", REGISTERED)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_shape(name: str, num_classes: int) -> None:
    model = build_model(name, num_classes=num_classes).eval()
    with torch.inference_mode():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


def test_normalisation_is_inside_and_out_of_the_state_dict() -> None:
    model = build_model("resnet20")
    assert isinstance(model.normalize, Normalize)
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(build_model("resnet18").normalize.std.flatten(), torch.tensor([0.2470, 0.2435, 0.2616]))
    keys = list(model.state_dict())
    assert not any("normalize" in key for key in keys)
    assert keys[:2] == ["conv1.weight", "bn1.weight"]
    assert "layer3.2.bn2.running_var" in keys and keys[-2:] == ["linear.weight", "linear.bias"]
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(model.normalize(x)[0, 0], (x[0, 0] - 0.485) / 0.229)


def test_option_a_shortcut_subsamples_and_pads_channels() -> None:
    block = build_model("resnet20").layer2[0]
    x = torch.randn(2, 16, 32, 32)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_spec_with_factory_that_takes_num_classes() -> None:
    model = build_model("torchvision.models:resnet18", num_classes=7)
    assert model.fc.out_features == 7


def test_spec_with_factory_without_num_classes() -> None:
    assert isinstance(build_model("torch.nn:Identity", num_classes=7), nn.Identity)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("resnet21", "resnet110, resnet18, resnet20"),
        ("no_such_module_xyz:net", "cannot import module 'no_such_module_xyz'"),
        ("torch.nn:NoSuchNet", "has no attribute 'NoSuchNet'"),
        ("builtins:dict", "not a torch nn.Module"),
    ],
)
def test_bad_specs_raise_model_spec_error(spec: str, fragment: str) -> None:
    with pytest.raises(ModelSpecError, match=fragment):
        build_model(spec)


def test_register_model_adds_a_name() -> None:
    @register_model(name="test_only_linear")
    def _factory(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    assert "test_only_linear" in list_models()
    assert build_model("test_only_linear", num_classes=3)(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ModelSpecError, match="already registered"):
        register_model(lambda num_classes=10: nn.Identity(), name="test_only_linear")


def test_checkpoint_round_trip_returns_extras(tmp_path: Path) -> None:
    source, target = build_model("resnet20"), build_model("resnet20")
    path = tmp_path / "sub" / "ck.th"
    save_checkpoint(path, source, epoch=3, note="hello")
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.th"]  # no temporary file left
    assert load_checkpoint(target, path) == {"epoch": 3, "note": "hello"}
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])


@pytest.mark.parametrize("layout", ["raw", "model", "module_prefix"])
def test_checkpoint_layouts(tmp_path: Path, layout: str) -> None:
    source, target = build_model("resnet20"), build_model("resnet20")
    state = source.state_dict()
    payload: object = {
        "raw": state,
        "model": {"model": state, "epoch": 1},
        "module_prefix": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
    }[layout]
    torch.save(payload, tmp_path / "ck.pt")
    load_checkpoint(target, tmp_path / "ck.pt")
    assert torch.equal(target.linear.weight, source.linear.weight)


def test_missing_and_unreadable_checkpoints(tmp_path: Path) -> None:
    model = build_model("resnet20")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "absent.th")
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(model, tmp_path / "junk.th")


def test_wrong_class_count_names_the_shape_mismatch(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck.th", build_model("resnet20", num_classes=100))
    with pytest.raises(CheckpointError, match=r"shape mismatches: 2 \(linear.weight \(checkpoint \(100, 64\)"):
        load_checkpoint(build_model("resnet20"), tmp_path / "ck.th")


@pytest.mark.realdata
def test_akamaster_resnet20_checkpoint_loads(shared_dir: Path) -> None:
    model = build_model("resnet20")
    extra = load_checkpoint(model, shared_dir / AKAMASTER / "resnet20-12fca82f.th")
    assert set(extra) == {"best_prec1"}
    assert model.bn1.num_batches_tracked.item() == 0  # absent from the legacy file, filled in
    assert model.conv1.weight.abs().sum() > 0


@pytest.mark.realdata
def test_resnet56_checkpoint_into_resnet20_names_keys(shared_dir: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build_model("resnet20"), shared_dir / AKAMASTER / "resnet56-4bfd9763.th")
    message = str(info.value)
    assert "unexpected keys: 180 (layer1.3.conv1.weight" in message
    assert "probably for another model" in message
    with pytest.raises(CheckpointError, match=r"missing keys: 180 \(layer1\.3\.conv1\.weight"):
        load_checkpoint(build_model("resnet56"), shared_dir / AKAMASTER / "resnet20-12fca82f.th")


class _Mask(nn.Module):
    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def test_models_work_with_parametrize_and_channels_last() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    reference = build_model("resnet20").eval()
    reference.load_state_dict(model.state_dict())
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ref_layers = [m for m in reference.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for module, ref_module in zip(layers, ref_layers):
        mask = (torch.rand_like(module.weight) > 0.5).float()
        parametrize.register_parametrization(module, "weight", _Mask(mask))
        with torch.no_grad():
            ref_module.weight.mul_(mask)
    model = model.to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x.contiguous()), atol=1e-4)
    assert isinstance(model, CifarResNet)
    assert "layer1.0.conv1.parametrizations.weight.original" in model.state_dict()
