"""``autocompress compare``: BitOps and latency, the naive pipelines' measurements, the whole comparison on a tiny model."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from torch import nn

from autocompress.cli import main
from autocompress.compare import STRATEGIES, CompareSettings, MeasureSettings, compare
from autocompress.compress import compressible_layers
from autocompress.engine import count_bitops, measure_latency
from autocompress.pack import read_packed
from autocompress.plan import Plan
from autocompress.strategies import get_strategy
from autocompress.strategies._naive import NaiveRun, min_max_levels, nearest_level, prune_then_quantize_, quantize_then_prune_
from tests._tiny_search import settings_for

QUICK = MeasureSettings(latency_rounds={1: 2, 256: 1})


def test_bitops_count_nonzero_macs_times_bits() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    with torch.no_grad():
        model[0].weight.view(-1)[::2] = 0.0  # 54 of 108 weights left
    counted = count_bitops(model, (3, 8, 8), weight_bits={"0": 4}, activation_bits=8)
    conv_dense, conv_nonzero, linear = 108 * 64, 54 * 64, 256 * 10  # a conv weight is used once per output position
    assert counted.macs_dense == conv_dense + linear
    assert counted.macs_nonzero == conv_nonzero + linear
    assert counted.bitops == conv_nonzero * 4 * 8 + linear * 32 * 8  # the linear layer is not in weight_bits: fp32
    assert counted.bitops_dense_fp32 == (conv_dense + linear) * 32 * 32


def test_bitops_follow_strides(make_tiny_cnn) -> None:
    model = make_tiny_cnn()
    counted = count_bitops(model, (3, 32, 32), weight_bits={})
    layers = compressible_layers(model)
    expected = layers["0"].weight.numel() * 32 * 32 + layers["3"].weight.numel() * 16 * 16 + layers["8"].weight.numel()
    assert counted.macs_dense == expected


@pytest.mark.parametrize(("spec", "published_macs_m"), [("resnet20", 40.55), ("resnet56", 125.49)])
def test_dense_macs_match_the_published_counts(spec: str, published_macs_m: float) -> None:
    from autocompress.models import build_model

    # the pruning literature's figures for the CIFAR ResNets (e.g. HRank, CVPR 2020: ResNet-56 125.49M)
    counted = count_bitops(build_model(spec), (3, 32, 32), weight_bits={})
    assert counted.macs_dense / 1e6 == pytest.approx(published_macs_m, abs=0.01)


def test_latency_measures_every_model_side_by_side(make_tiny_cnn) -> None:
    models = {"a": make_tiny_cnn(), "b": make_tiny_cnn(seed=1)}
    seconds = measure_latency(models, (3, 32, 32), batch_size=4, device=torch.device("cpu"), rounds=3)
    assert set(seconds) == {"a", "b"} and all(value > 0 for value in seconds.values())


def test_min_max_levels_have_no_zero_in_general() -> None:
    weight = torch.tensor([-0.7, 0.0, 0.0, 0.2, 1.0])
    levels = min_max_levels(weight, 2)
    assert levels.tolist() == pytest.approx([-0.7, -0.7 + 1.7 / 3, -0.7 + 3.4 / 3, 1.0])
    assert 0.0 not in nearest_level(weight, levels).tolist()


def _uniform_plan(model: nn.Module, sparsity: float, bits: int) -> Plan:
    return Plan.uniform(compressible_layers(model), sparsity=sparsity, bits=bits)


def test_prune_then_quantize_measures_the_zeros_it_loses(make_tiny_cnn, synthetic_splits) -> None:
    model = make_tiny_cnn()
    plan = _uniform_plan(model, 0.7, 3)
    outcome = prune_then_quantize_(model, plan, NaiveRun(synthetic_splits, torch.device("cpu"), 0.4, batch_size=64,
                                                         progress=False))
    measured = outcome.measurements
    # min-max levels put no code at zero: every pruned weight becomes the level nearest zero
    assert measured["pruned_nonzero_after_quantization"] > 0.9
    assert measured["pruned_nonzero_after_qat"] > 0.9
    assert measured["pruned_latent_nonzero_after_qat"] > 0.5  # QAT without the mask moves the pruned weights
    assert 0 <= measured["pruned_kept_by_final_mask"] <= 1
    assert set(outcome.stage_val_accuracy) == {"pruned_retrained", "quantized", "after_qat"}
    assert not any(nn.utils.parametrize.is_parametrized(layer) for layer in compressible_layers(model).values())


def test_quantize_then_prune_keeps_its_zeros_and_counts_code_changes(make_tiny_cnn, synthetic_splits) -> None:
    model = make_tiny_cnn()
    plan = _uniform_plan(model, 0.7, 3)
    outcome = quantize_then_prune_(model, plan, NaiveRun(synthetic_splits, torch.device("cpu"), 0.4, batch_size=64,
                                                         progress=False))
    assert outcome.measurements["pruned_nonzero_after_qat"] == 0.0  # the mask is fixed while retraining
    assert 0.0 <= outcome.measurements["kept_codes_changed_by_retraining"] < 1.0
    for name, layer in compressible_layers(model).items():
        assert torch.unique(layer.weight[layer.weight != 0]).numel() <= 2**3 - 1  # still on the codebook
        assert int(torch.count_nonzero(layer.weight)) <= round(0.3 * layer.weight.numel()) + 1, name


def test_compare_runs_every_strategy_into_one_storage(tmp_path: Path, synthetic_data_dir: Path, tiny_checkpoint: Path) -> None:
    # 900 B: in packed format 2 the tiny net fits 3 KB dense at 2-3 bits (about 1 KB at 1 bit), so only a target
    # below that makes every strategy prune, which the naive baselines' measurements below are about
    search = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, target_size="900B", projections_per_epoch=10, any_mode=True)
    settings = CompareSettings(search, epochs=0.2, trials=2, name="cmp")
    messages: list[str] = []
    frame = compare(settings, command="autocompress compare (test)", measure=QUICK, log=messages.append)

    assert list(frame["strategy"]) == ["baseline (fp32)", *STRATEGIES]
    folder = tmp_path / "cmp"
    for strategy in STRATEGIES:
        packed = folder / strategy / "best.acz"
        row = frame[frame["strategy"] == strategy].iloc[0]
        assert row["bytes"] == os.path.getsize(packed) <= 900, strategy
        assert read_packed(packed).n_bytes == row["bytes"]
        assert 0 <= row["test_accuracy"] <= 1 and row["wall_min"] > 0 and row["latency_b256_ms"] > 0
        assert row["bitops_g"] < frame.iloc[0]["bitops_g"]  # fewer non-zero weights at fewer bits than fp32
        assert 0 < row["sparsity"] < 1 and 1 <= row["mean_bits"] <= 6
    naive = frame.set_index("strategy")
    assert naive.loc["prune-then-quantize", "pruned_nonzero_after_quantization"] > 0.9
    for joint in ("uniform", "bo", "admm", "bayesbits", "random"):
        assert naive.loc[joint, "pruned_nonzero_after_quantization"] == 0.0
        assert naive.loc[joint, "pruned_nonzero_after_qat"] == 0.0
    assert naive.loc["bo", "hyperparameters"] > naive.loc["uniform", "hyperparameters"]
    studies = {summary.study_name for summary in optuna.get_all_study_summaries(f"sqlite:///{folder / 'study.db'}")}
    assert studies == set(STRATEGIES)
    bo_trials = optuna.load_study(study_name="bo", storage=f"sqlite:///{folder / 'study.db'}").trials
    assert "uniform-warmstart" in {trial.user_attrs.get("strategy") for trial in bo_trials}  # the product's BO, warm starts included
    written = pd.read_csv(folder / "compare.csv")
    assert list(written["strategy"]) == list(frame["strategy"])
    markdown = (folder / "compare.md").read_text()
    assert "| strategy | bytes |" in markdown and "prune-then-quantize" in markdown and "autocompress compare (test)" in markdown
    assert (folder / "compare.png").stat().st_size > 10_000

    # run again: every strategy is already done, so nothing is trained and the table is measured again
    again: list[str] = []
    compare(settings, command="again", measure=QUICK, log=again.append)
    assert sum("already done" in message for message in again) == len(STRATEGIES)
    assert len(optuna.load_study(study_name="uniform", storage=f"sqlite:///{folder / 'study.db'}").trials) == 1


def test_compare_without_checkpoint_starts_from_the_cached_baseline(synthetic_data_dir: Path, tiny_checkpoint: Path) -> None:
    root = tiny_checkpoint.parents[1]  # where the search cached the baseline it trained
    search = settings_for(root, synthetic_data_dir, None, target_size="3KB", any_mode=True)
    settings = CompareSettings(search, epochs=0.1, strategies=("uniform",), name="cmp-no-checkpoint")
    messages: list[str] = []
    frame = compare(settings, command="c", measure=QUICK, log=messages.append)
    assert any(message.startswith("baseline: cached") for message in messages)
    assert settings.search.checkpoint == str(tiny_checkpoint)
    assert list(frame["strategy"]) == ["baseline (fp32)", "uniform"]
    assert frame.iloc[1]["bytes"] <= 3000


def test_compare_cli_writes_the_table_with_its_command(tmp_path: Path, synthetic_data_dir: Path, tiny_checkpoint: Path,
                                                       capsys) -> None:
    argv = ["compare", "--target-size", "3KB", "--model", "tinynet:tiny", "--checkpoint", str(tiny_checkpoint),
            "--data-dir", str(synthetic_data_dir), "--output-root", str(tmp_path), "--device", "cpu", "--val-size", "200",
            "--batch-size", "64", "--epochs", "0.1", "--strategies", "uniform,quantize-then-prune", "--name", "cli"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "quantize-then-prune" in printed and "codes moved: retrain" in printed
    markdown = (tmp_path / "cli" / "compare.md").read_text()
    assert "autocompress compare --target-size 3KB --model tinynet:tiny" in markdown
    assert "optuna-dashboard sqlite:///" in printed


def test_compare_cli_refuses_bad_input_before_training(tmp_path: Path, synthetic_data_dir: Path, tiny_checkpoint: Path,
                                                       capsys) -> None:
    common = ["--model", "tinynet:tiny", "--checkpoint", str(tiny_checkpoint), "--data-dir", str(synthetic_data_dir),
              "--output-root", str(tmp_path), "--device", "cpu"]
    assert main(["compare", "--target-size", "5KB", "--strategies", "uniform,magic", *common]) == 2
    assert "error: --strategies uniform,magic: must list some of" in capsys.readouterr().err
    assert main(["compare", "--target-size", "10B", *common]) == 2
    assert "below the smallest plan" in capsys.readouterr().err
    assert main(["compare", "--target-size", "5 potatoes", *common]) == 2
    assert not any(tmp_path.iterdir())


def test_compare_settings_split_the_budget_the_same_way(tmp_path: Path) -> None:
    search = settings_for(tmp_path, tmp_path, None, target_size="5KB", any_mode=True)
    settings = CompareSettings(search, epochs=2.0, trials=4)
    bo, admm, uniform = (settings.for_strategy(name) for name in ("bo", "admm", "uniform"))
    assert bo.trials * bo.epochs_per_trial + bo.final_epochs == pytest.approx(2.0)
    assert admm.admm_epochs + admm.final_epochs == pytest.approx(2.0)
    assert uniform.final_epochs == 2.0
    random_arm = get_strategy("random").prepare(settings.for_strategy("random"))
    assert random_arm.sampler == "random" and not random_arm.warm_start
    assert {bo.storage, admm.storage} == {f"sqlite:///{tmp_path / (search.model.replace(':', '_') + '-5000B-compare') / 'study.db'}"}
    assert dataclasses.replace(settings, name="x").folder == tmp_path / "x"


def test_a_kl_scored_bo_arm_fine_tunes_as_many_candidates_with_the_same_epochs(tmp_path: Path) -> None:
    search = settings_for(tmp_path, tmp_path, None, target_size="5KB", space="coefficients", trial_score="kl", trials=40, any_mode=True)
    bo = CompareSettings(search, epochs=2.0, trials=4).for_strategy("bo")
    assert bo.trials == 40  # scored trials train nothing: the preset's count stays
    assert bo.finetune_top == 4 and bo.finetune_top * bo.epochs_per_trial + bo.final_epochs == pytest.approx(2.0)
