"""Masks, quantizers, fake-quant training, hardening and BN recalibration."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from autocompress.compress import (
    attach_fake_quant_,
    compressible_layers,
    dequantize,
    detach_fake_quant_,
    harden_,
    kept_count,
    magnitude_mask,
    magnitude_ranks,
    quantize,
    recalibrate_bn_,
    uniform_grid_max,
)
from autocompress.data import DataSplits
from autocompress.engine import train
from autocompress.plan import QUANTIZERS, LayerSetting, Plan

SETTINGS = list(itertools.product(QUANTIZERS, range(1, 9), (0.0, 0.35, 0.9)))


@pytest.fixture(scope="module")
def weight() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(32, 16, 3, 3) * 0.1


@pytest.mark.parametrize(("quantizer", "bits", "sparsity"), SETTINGS)
def test_quantizer_keeps_exactly_the_largest_weights(weight: torch.Tensor, quantizer: str, bits: int, sparsity: float) -> None:
    setting = LayerSetting(sparsity, bits, quantizer)
    quantized = quantize(weight, setting)
    values = dequantize(quantized)
    kept = values != 0
    assert int(kept.sum()) == kept_count(weight.numel(), sparsity)  # exactly the plan's zeros
    assert torch.equal(kept, quantized.codes != 0)  # no kept weight quantized to zero
    if sparsity > 0:
        assert weight[kept].abs().min() >= weight[~kept].abs().max()  # magnitude pruning
    # b-bit codes with zero as a code; 1-bit uniform is sign x scale; clipq_full's zeros live in the sparse index
    max_levels = 2 if (quantizer, bits) == ("uniform", 1) else 2**bits if quantizer == "clipq_full" else 2**bits - 1
    assert len(torch.unique(quantized.codes[kept])) <= max_levels
    for channel_values, channel_kept in zip(values, kept):
        assert len(torch.unique(channel_values[channel_kept])) <= max_levels
    assert int(quantized.codes.max()) <= quantized.n_levels


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_quantization_never_turns_a_pruned_weight_non_zero(quantizer: str) -> None:
    """The seed's first failure mode: zeros (pruned before, or by the plan) must stay zero."""
    torch.manual_seed(1)
    weight = torch.randn(64, 64)
    weight[weight.abs() < 0.8] = 0.0  # an already pruned layer: ~58 % zeros
    zeros_before = weight == 0
    quantized = dequantize(quantize(weight, LayerSetting(float(zeros_before.float().mean()), 2, quantizer)))
    assert torch.all(quantized[zeros_before] == 0)


def test_clipq_levels_are_interval_means() -> None:
    weight = torch.tensor([-1.0, -0.9, -0.05, 0.01, 0.5, 0.6, 1.0, 0.02])
    quantized = quantize(weight, LayerSetting(sparsity=0.25, bits=2, quantizer="clipq"))  # 2 smallest pruned
    values = dequantize(quantized)
    assert values[3] == 0 and values[7] == 0
    # kept range [-1, 1] in 3 intervals: [-1, -1/3), [-1/3, 1/3), [1/3, 1]
    expected = torch.tensor([-0.95, -0.95, -0.05, 0.0, 0.7, 0.7, 0.7, 0.0]).half().float()
    assert torch.allclose(values, expected, atol=1e-3)


def test_uniform_is_a_symmetric_integer_grid_per_output_channel(weight: torch.Tensor) -> None:
    for bits in (2, 4, 8):
        quantized = quantize(weight, LayerSetting(0.3, bits, "uniform"))
        steps = dequantize(quantized) / quantized.table.float().view(-1, 1, 1, 1)
        assert torch.equal(steps, steps.round())
        assert steps.abs().max() <= uniform_grid_max(bits)
        assert quantized.table.numel() == weight.shape[0]


def test_kmeans_assigns_each_weight_to_its_nearest_level(weight: torch.Tensor) -> None:
    quantized = quantize(weight, LayerSetting(0.5, 3, "kmeans"))
    values = dequantize(quantized)
    kept = quantized.codes != 0
    levels = quantized.table.float()
    nearest = levels[(weight[kept].unsqueeze(1) - levels).abs().argmin(1)]
    assert torch.equal(values[kept], nearest)
    clipq_error = ((dequantize(quantize(weight, LayerSetting(0.5, 3, "clipq"))) - weight)[kept] ** 2).sum()
    assert ((values - weight)[kept] ** 2).sum() <= clipq_error  # k-means minimises the distortion


def test_fake_quant_forward_is_the_compressed_weight_and_gradient_passes_straight(weight: torch.Tensor) -> None:
    layer = nn.Conv2d(16, 32, 3, bias=False)
    layer.weight.data.copy_(weight)
    model = nn.Sequential(layer)
    plan = Plan(layers={"0": LayerSetting(0.6, 3, "clipq")})
    attach_fake_quant_(model, plan)
    expected = dequantize(quantize(weight, plan.layers["0"]))
    assert torch.equal(layer.weight, expected)
    x = torch.randn(2, 16, 8, 8)
    model(x).sum().backward()
    original = layer.parametrizations.weight.original
    reference = nn.Conv2d(16, 32, 3, bias=False)
    reference.weight.data.copy_(expected)
    reference(x).sum().backward()
    assert torch.allclose(original.grad, reference.weight.grad)  # straight-through, pruned weights included
    assert torch.count_nonzero(original.grad[expected == 0]) > 0
    detach_fake_quant_(model)
    assert not parametrize.is_parametrized(layer) and torch.equal(layer.weight, weight)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_training_never_revives_a_weight_the_plan_prunes(
    synthetic_splits: DataSplits, make_tiny_cnn, quantizer: str
) -> None:
    """The seed's second failure mode: after QAT the hard weights have exactly the plan's zeros."""
    model = make_tiny_cnn()
    plan = Plan.uniform(compressible_layers(model), sparsity=0.7, bits=3, quantizer=quantizer)
    attach_fake_quant_(model, plan)
    train(model, synthetic_splits.train, device="cpu", epochs=1, lr=0.05, batch_size=64, progress=False)
    for name, module in compressible_layers(model).items():
        assert int((module.weight == 0).sum()) == module.weight.numel() - kept_count(module.weight.numel(), 0.7), name
    harden_(model, plan)
    for name, module in compressible_layers(model).items():
        assert int((module.weight == 0).sum()) == module.weight.numel() - kept_count(module.weight.numel(), 0.7), name


def test_naive_qat_after_pruning_does_revive_weights(synthetic_splits: DataSplits, make_tiny_cnn) -> None:
    """What the wrapper prevents: pruning once, then training without the mask, revives zeros."""
    model = make_tiny_cnn()
    plan = Plan.uniform(compressible_layers(model), sparsity=0.7, bits=8, quantizer="uniform")
    harden_(copy.deepcopy(model), plan)
    with torch.no_grad():
        for module in compressible_layers(model).values():
            module.weight.copy_(dequantize(quantize(module.weight, plan.layers[next(iter(plan.layers))])))
    pruned = {name: module.weight == 0 for name, module in compressible_layers(model).items()}
    train(model, synthetic_splits.train, device="cpu", epochs=0.3, lr=0.05, batch_size=64, progress=False)
    revived = sum(int((module.weight[pruned[name]] != 0).sum()) for name, module in compressible_layers(model).items())
    assert revived > 0


def test_harden_matches_the_fake_quant_forward(make_tiny_cnn) -> None:
    model = make_tiny_cnn()
    plan = Plan.uniform(compressible_layers(model), sparsity=0.5, bits=4, quantizer="clipq")
    attach_fake_quant_(model, plan)
    forward_weights = {name: module.weight.detach().clone() for name, module in compressible_layers(model).items()}
    quantized = harden_(model, plan)
    for name, module in compressible_layers(model).items():
        assert torch.equal(module.weight, forward_weights[name])
        assert torch.equal(module.weight, dequantize(quantized[name]))


def test_harden_folds_batch_norm_without_changing_the_function(make_tiny_cnn) -> None:
    model = make_tiny_cnn().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.rand(4, 3, 32, 32)
    before = model(x)
    harden_(model, Plan(layers={}))  # no layer compressed: only the storage precision changes
    bn = model[1]
    assert torch.equal(bn.running_mean, torch.zeros(16))
    assert torch.allclose(model(x), before, atol=2e-2, rtol=1e-2)
    assert torch.equal(bn.weight, bn.weight.half().float())


def test_recalibration_gives_the_exact_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    batches = [(torch.randn(8, 3, 10, 10), torch.zeros(8)) for _ in range(3)]
    used = recalibrate_bn_(model, iter(batches), num_batches=2)
    assert used == 2
    with torch.no_grad():
        activations = torch.cat([model[0](images) for images, _ in batches[:2]])
    expected_mean = activations.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)
    assert not model.training


@given(
    values=st.lists(st.integers(-3, 3), min_size=1, max_size=60),
    keep_share=st.floats(0.0, 1.0),
)
@settings(max_examples=200, deadline=None)
def test_magnitude_mask_is_the_rank_order_even_with_ties(values: list[int], keep_share: float) -> None:
    weight = torch.tensor(values, dtype=torch.float32) / 4  # many exact ties, zeros included
    n_kept = max(1, round(keep_share * weight.numel()))
    mask = magnitude_mask(weight, n_kept)
    assert int(mask.sum()) == n_kept
    assert torch.equal(mask, magnitude_ranks(weight) < n_kept)
    if n_kept < weight.numel():
        assert weight[mask].abs().min() >= weight[~mask].abs().max()
