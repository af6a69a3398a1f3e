"""The Bayesian Bits mode: gate maths, the decomposition on the format's grid, expected bytes, and whole runs."""

from __future__ import annotations

import copy
import math
import os
import random
import signal
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from torch import nn

from autocompress.allocation import SearchSpace
from autocompress.compress import compressible_layers, dequantize, full_precision_weight, quantize
from autocompress.engine import train
from autocompress.errors import AutocompressError
from autocompress.pack import SizeAccountant, read_packed
from autocompress.plan import LayerSetting
from autocompress.runner import load_settings, run_search
from autocompress.strategies._bayesbits import LagrangeMultiplier, top_plan
from autocompress.strategies._bayesbits_gates import (
    BETA,
    GAMMA,
    ZETA,
    ExpectedBytes,
    attach_gates_,
    gated_weight,
    hard_gate,
    ladder_for,
    open_probability,
    sample_gate,
    width_probabilities,
)
from tests._tiny_search import settings_for

CPU = torch.device("cpu")


def gated_model(make_tiny_cnn, *, groups: str = "channel", ladder: tuple[int, ...] = (2, 4, 8)):
    model = make_tiny_cnn()
    shadow = copy.deepcopy(model)
    gated = attach_gates_(model, tuple(compressible_layers(model)), ladder, seed=0, device=CPU, groups=groups)
    return model, shadow, gated


def test_hard_concrete_gate_matches_a_direct_computation() -> None:
    for log_alpha, u in [(0.0, 0.5), (1.3, 0.2), (-2.0, 0.9), (3.0, 0.01), (-0.4, 0.73)]:
        stretched = 1 / (1 + math.exp(-(math.log(u) - math.log(1 - u) + log_alpha) / BETA)) * (ZETA - GAMMA) + GAMMA
        expected = min(1.0, max(0.0, stretched))
        got = sample_gate(torch.tensor(log_alpha), torch.tensor(u))
        assert float(got) == pytest.approx(expected, abs=1e-6)
    # P(z > 0) in closed form against the frequency over many samples
    generator = torch.Generator().manual_seed(0)
    for log_alpha in (-2.0, -0.5, 0.0, 1.0, 2.5):
        noise = torch.rand(200_000, generator=generator)
        frequency = float((sample_gate(torch.tensor(log_alpha), noise) > 0).float().mean())
        assert float(open_probability(torch.tensor(log_alpha))) == pytest.approx(frequency, abs=0.005)
    # the hard gate is open exactly where P(z > 0) >= 1/2, i.e. log_alpha >= BETA * log(-GAMMA / ZETA)
    threshold = BETA * math.log(-GAMMA / ZETA)
    assert hard_gate(torch.tensor([threshold - 1e-3, threshold + 1e-3])).tolist() == [0.0, 1.0]
    # the sample is differentiable in log_alpha
    log_alpha = torch.tensor(0.3, requires_grad=True)
    sample_gate(log_alpha, torch.tensor(0.6)).backward()
    assert log_alpha.grad is not None and float(log_alpha.grad) > 0


def test_width_probabilities_follow_the_doublings() -> None:
    p = torch.tensor([0.8, 0.25])
    assert width_probabilities(p).tolist() == pytest.approx([0.2, 0.8 * 0.75, 0.8 * 0.25])
    assert width_probabilities(torch.tensor([])).tolist() == [1.0]
    assert ladder_for(2, 8) == (2, 4, 8) and ladder_for(2, 6) == (2, 4) and ladder_for(3, 7) == (4,) and ladder_for(5, 7) == ()


def test_the_decomposition_with_gates_up_to_b_is_plain_b_bit_uniform_quantization(make_tiny_cnn) -> None:
    model, _, gated = gated_model(make_tiny_cnn)
    model.eval()  # hard gates
    layers = compressible_layers(model)
    for bits in (2, 4, 8):
        for name, gate in gated.items():
            gate.force(bits=bits)
            weight = full_precision_weight(layers[name]).detach()
            plain = dequantize(quantize(weight, LayerSetting(sparsity=0.0, bits=bits, quantizer="uniform")))
            assert torch.allclose(layers[name].weight, plain, rtol=0, atol=1e-6 * float(weight.abs().max())), (name, bits)
    # rounding passes the gradient straight through, scaled by the pruning gate of the weight's channel
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    channel_gates = torch.tensor([1.0, 0.0, 1.0, 0.5])
    gated_weight(weight, (2, 4, 8), torch.tensor([1.0, 0.3]), channel_gates).sum().backward()
    assert torch.equal(weight.grad, channel_gates.view(4, 1, 1, 1).expand(4, 3, 3, 3))
    # and the residuals really are gated: 2 bits differs from 8 bits
    gate = gated["0"]
    gate.force(bits=2)
    two = layers["0"].weight.detach().clone()
    gate.force(bits=8)
    assert not torch.allclose(two, layers["0"].weight)


def test_with_every_gate_shut_a_layer_is_pruned_and_the_plan_keeps_one_group(make_tiny_cnn) -> None:
    model, shadow, gated = gated_model(make_tiny_cnn)
    model.eval()
    layers = compressible_layers(model)
    gated["3"].force(bits=2, open_channels=torch.zeros(32, dtype=torch.bool))
    assert torch.count_nonzero(layers["3"].weight) == 0
    some = torch.zeros(16, dtype=torch.bool)
    some[[1, 5]] = True
    gated["0"].force(bits=4, open_channels=some)
    assert torch.count_nonzero(layers["0"].weight.detach().flatten(1).abs().sum(1)) == 2
    space = SearchSpace(layers=tuple(layers), quantizers=("uniform",), sparsity_max=0.95)
    expected = ExpectedBytes(model, gated, space, model_spec="t", shadow=shadow)
    plan = expected.hard.plan
    assert plan.layers["0"] == LayerSetting(sparsity=14 / 16, bits=4, quantizer="uniform")
    # all 32 gates shut, but at most 95 % of a layer goes: the 2 most probable of 32 channels stay
    assert plan.layers["3"].sparsity == pytest.approx(30 / 32) and plan.layers["3"].bits == 2
    assert int(expected.hard.masks["3"].sum()) == 2 * 16 * 9
    # with gradient: the sampled forward reaches the gates
    model.train()
    loss = sum(layer.weight.sum() for layer in layers.values())
    loss.backward()
    assert gated["0"].bit_log_alpha.grad is not None and gated["0"].channel_log_alpha.grad is not None


@pytest.mark.parametrize("groups", ["channel", "kernel"])
def test_expected_bytes_of_a_hard_plan_are_the_accountants_bytes(make_tiny_cnn, groups: str) -> None:
    rng = random.Random(0)
    for trial in range(6):
        model, shadow, gated = gated_model(make_tiny_cnn, groups=groups)
        for gate in gated.values():
            shut = None
            if gate.channel_log_alpha is not None:
                share = rng.choice([0.0, 0.3, 0.7, 0.97])
                shut = torch.rand(gate.channel_log_alpha.shape, generator=torch.Generator().manual_seed(trial)) >= share
            gate.force(bits=rng.choice([2, 4, 8]), open_channels=shut)
        space = SearchSpace(layers=tuple(gated), quantizers=("uniform",), sparsity_max=0.95,
                            sparsity_min=rng.choice([0.0, 0.0, 0.5]))
        expected = ExpectedBytes(model, gated, space, model_spec="tinynet:tiny", shadow=shadow)
        # the accountant of a fresh copy of the model with the hard plan's pruned weights zeroed
        check = copy.deepcopy(shadow)
        check_layers, layers = compressible_layers(check), compressible_layers(model)
        with torch.no_grad():
            for name, mask in expected.hard.masks.items():
                full_precision_weight(check_layers[name]).copy_(full_precision_weight(layers[name]).detach() * mask)
        accountant = SizeAccountant(check, model_spec="tinynet:tiny").total(expected.hard.plan)
        assert float(expected().detach()) == pytest.approx(accountant, abs=1e-3), (groups, trial)
        assert expected.hard_bytes == accountant


def test_expected_bytes_are_smooth_and_fall_as_gates_close(make_tiny_cnn) -> None:
    model, shadow, gated = gated_model(make_tiny_cnn)
    space = SearchSpace(layers=tuple(gated), quantizers=("uniform",))
    expected = ExpectedBytes(model, gated, space, model_spec="t", shadow=shadow)
    value = expected()
    value.backward()
    for gate in gated.values():
        assert gate.bit_log_alpha.grad is not None and bool((gate.bit_log_alpha.grad > 0).all())
    before = float(value)
    with torch.no_grad():
        gated["3"].bit_log_alpha.sub_(2.0)
        gated["3"].channel_log_alpha.sub_(1.0)
    assert float(expected()) < before


def test_the_lagrange_multiplier_rises_while_over_and_falls_back_when_under() -> None:
    multiplier = LagrangeMultiplier(target_bytes=1000, step=0.5, anneal_share=0.5)
    multiplier.penalty(torch.tensor(3000.0))
    assert multiplier.goal_bytes == 3000  # the goal starts at the first size
    multiplier.aim(0.25)
    assert multiplier.goal_bytes == pytest.approx(2000)
    multiplier.aim(0.6)
    assert multiplier.goal_bytes == 1000
    for _ in range(4):
        multiplier.penalty(torch.tensor(1500.0))
        multiplier.update()
    assert multiplier.value == pytest.approx(4 * 0.5 * 0.5)  # lambda rose by step x violation per step
    penalty = multiplier.penalty(torch.tensor(1500.0, requires_grad=True))
    assert float(penalty) == pytest.approx(multiplier.value * 0.5)
    for _ in range(5):
        multiplier.penalty(torch.tensor(800.0))
        multiplier.update()
    assert multiplier.value == pytest.approx(1.0 - 5 * 0.5 * 0.2)
    for _ in range(20):
        multiplier.update()
    assert multiplier.value == 0.0  # never below 0


def test_train_adds_the_penalty_and_steps_the_auxiliary_parameters_apart(make_tiny_cnn, synthetic_splits) -> None:
    model = make_tiny_cnn()
    extra = nn.Parameter(torch.zeros(()))
    model.register_parameter("extra", extra)
    weight_before = model[0].weight.detach().clone()
    auxiliary = torch.optim.SGD([extra], lr=1.0)
    train(model, synthetic_splits.train, device=CPU, epochs=0.05, lr=0.01, batch_size=32, progress=False,
          penalty=lambda: (extra - 3.0) ** 2, auxiliary=auxiliary)
    assert not torch.equal(model[0].weight, weight_before)
    # plain SGD at lr 1 on (x - 3)^2 from 0: x -> 6, 0, 6, ... would oscillate with momentum; here: no momentum, no decay
    assert float(extra) in (0.0, 6.0)


def test_bayesbits_needs_a_power_of_two_width_within_the_bounds() -> None:
    with pytest.raises(AutocompressError, match="--min-bits 5: mode bayesbits keeps 2, 4, 8 bits; none lies in 5..7"):
        load_settings(None, {"target_size": "50KB", "mode": "bayesbits", "bits_min": 5, "bits_max": 7})
    with pytest.raises(AutocompressError, match="--gate-groups layer: must be one of channel, kernel"):
        load_settings(None, {"target_size": "50KB", "mode": "bayesbits", "gate_groups": "layer"})
    settings = load_settings(None, {"target_size": "50KB", "mode": "bayesbits", "bits_min": 3, "bits_max": 7})
    assert settings.resolved_study_name.endswith("-bayesbits")
    space = SearchSpace(layers=("a", "b"), bits_min=3, bits_max=7, quantizers=("uniform",))
    assert {setting.bits for setting in top_plan(space, "m").layers.values()} == {4}


@pytest.mark.parametrize("masks", ["magnitude", "gates"])
def test_a_bayesbits_run_records_its_trial_writes_a_file_within_the_target_and_resumes(
    tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path, masks: str
) -> None:
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, mode="bayesbits", target_size="3KB",
                            gate_epochs=0.5, final_epochs=0.2, study_name="bb", gate_masks=masks)
    messages: list[str] = []
    run_search(settings, log=messages.append)
    study = optuna.load_study(study_name="bb", storage=settings.resolved_storage)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.user_attrs["strategy"] == "bayesbits"
    assert trial.user_attrs["feasible"] and trial.user_attrs["packed_bytes"] <= 3000
    folder = settings.study_dir
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["result"]["packed_bytes"] == os.path.getsize(folder / "best.acz") == read_packed(folder / "best.acz").n_bytes
    assert best["result"]["packed_bytes"] <= 3000
    gates = best["result"]["measurements"]
    assert gates["gate_gap_bytes"] == gates["gate_plan_bytes"] - 3000
    assert {layer["quantizer"] for layer in best["layers"].values()} == {"uniform"}
    if not gates["repaired"]:  # the gates' own plan fitted: it is the plan, with its power-of-two widths
        assert {layer["bits"] for layer in best["layers"].values()} <= {2, 4, 8}
        assert {name: layer["sparsity"] for name, layer in best["layers"].items()} == pytest.approx(
            {name: layer["sparsity"] for name, layer in gates["gate_plan"].items()})
    if masks == "gates" and not gates["repaired"]:  # the packed file keeps exactly whole groups of the convolutions: none is partly pruned
        model = read_packed(folder / "best.acz").model
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                kept = (module.weight != 0).flatten(2).sum(2)
                assert bool(((kept == 0) | (kept == module.weight[0, 0].numel())).all())
    assert any("gates' plan:" in message for message in messages)
    for name in ("run.yaml", "trials.csv", "pareto.csv", "pareto.png"):
        assert (folder / name).stat().st_size > 0, name
    rerun: list[str] = []
    run_search(settings, log=rerun.append)
    assert any("already complete" in message for message in rerun)
    assert len(optuna.load_study(study_name="bb", storage=settings.resolved_storage).trials) == 1


def test_sigint_during_gate_training_fails_the_trial_and_a_rerun_completes(
    tiny_module: Path, tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    from tests.test_search import run_cli

    env = {**os.environ, "PYTHONPATH": str(tiny_module), "OMP_NUM_THREADS": "1"}
    args = ["search", "--mode", "bayesbits", "--target-size", "3KB", "--model", "tinynet:tiny", "--checkpoint",
            str(tiny_checkpoint), "--data-dir", str(synthetic_data_dir), "--set", "val_size=200", "--final-epochs", "0.2",
            "--batch-size", "64", "--study-name", "bbint", "--device", "cpu", "--max-bits", "6"]
    storage = f"sqlite:///{tmp_path / 'studies' / 'bbint' / 'study.db'}"
    process = run_cli(*args, "--gate-epochs", "50", env=env, cwd=tmp_path)
    deadline = time.monotonic() + 300
    running = False
    while time.monotonic() < deadline and process.poll() is None and not running:
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name="bbint", storage=storage).trials
        except Exception:  # the study is not created yet
            continue
        running = any(trial.state == optuna.trial.TrialState.RUNNING for trial in trials)
    time.sleep(2.0)  # inside the gate training
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    (trial,) = optuna.load_study(study_name="bbint", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
    assert not (tmp_path / "studies" / "bbint" / "best.acz").exists()
    rerun = run_cli(*args, "--gate-epochs", "0.3", env=env, cwd=tmp_path)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert "gates' plan:" in stdout
    trials = optuna.load_study(study_name="bbint", storage=storage).trials
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert (tmp_path / "studies" / "bbint" / "best.acz").stat().st_size <= 3000
