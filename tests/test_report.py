"""Reports on a study: the trial table, the Pareto front, the plots and files, the terminal summary."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from autocompress.files import atomic_path
from autocompress.report import (
    BASE_COLUMNS,
    pareto_frame,
    plot_pareto_png,
    summary_table,
    trials_frame,
    write_study_report,
)

TARGET = 50_000
FP32_BYTES = 1_090_000
LAYERS = ("conv1", "layer1.0.conv1", "fc")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # set_metric_names

# number -> (state, accuracy, packed_bytes, trained); the numbers are the order trials are added.
TRIALS: dict[int, tuple[TrialState, float | None, int | None, bool]] = {
    0: (TrialState.COMPLETE, 0.80, 30_000, True),
    1: (TrialState.COMPLETE, 0.85, 45_000, True),  # best feasible
    2: (TrialState.COMPLETE, 0.84, 48_000, True),  # dominated by 1
    3: (TrialState.COMPLETE, 0.0, 70_000, False),  # over budget, not trained: placeholder 0.0
    4: (TrialState.COMPLETE, 0.90, 60_000, True),  # over budget but trained: on the front, infeasible
    5: (TrialState.PRUNED, 0.95, 20_000, True),  # would dominate everything, but was pruned
    6: (TrialState.FAIL, None, 40_000, False),
    7: (TrialState.COMPLETE, 0.70, 25_000, True),  # smallest: on the front
    8: (TrialState.COMPLETE, 0.80, 32_000, True),  # dominated by 0
    9: (TrialState.RUNNING, None, None, False),
}
EXPECTED_FRONT = [7, 0, 1, 4]


def make_trial(number: int) -> optuna.trial.FrozenTrial:
    state, accuracy, packed, trained = TRIALS[number]
    attrs: dict[str, Any] = {"strategy": "uniform-warmstart" if number == 0 else "tpe", "wall_seconds": 1.5 + number}
    if packed is not None:
        bits = 2 + number % 5
        attrs.update(
            packed_bytes=packed,
            feasible=packed <= TARGET,
            constraint=[float(packed - TARGET)],
            compression_ratio=FP32_BYTES / packed,
            mean_bits=bits - 0.25,
            sparsity=0.5 + number / 100,
            repaired=number in (1, 8),
            plan={layer: {"sparsity": 0.1 * (i + 1), "bits": bits + i, "quantizer": "clipq"} for i, layer in enumerate(LAYERS)},
        )
    if trained:
        attrs["val_accuracy"] = accuracy
    if state == TrialState.FAIL:
        attrs["fail_reason"] = "TrainingDivergedError: loss became nan"
    kwargs: dict[str, Any] = {"state": state, "user_attrs": attrs}
    if state == TrialState.COMPLETE:
        kwargs["value"] = accuracy
    if state == TrialState.PRUNED:
        kwargs["intermediate_values"] = {0: 0.6, 1: accuracy}
    return create_trial(**kwargs)


def make_study(numbers: list[int]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.set_metric_names(["val_accuracy"])
    study.set_user_attr("target_bytes", TARGET)
    study.set_user_attr("model", "resnet20")
    study.set_user_attr("baseline_accuracy", {"val": 0.915, "test": 0.917})
    for number in numbers:
        study.add_trial(make_trial(number))
    return study


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    return make_study(list(TRIALS))


@pytest.fixture(scope="module")
def frame(study: optuna.Study) -> pd.DataFrame:
    return trials_frame(study)


@pytest.fixture(scope="module")
def report(study: optuna.Study, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_study_report(study, tmp_path_factory.mktemp("report") / "studies" / "s1")


def test_trials_frame_has_a_row_per_trial_with_measured_accuracy_and_per_layer_settings(frame: pd.DataFrame) -> None:
    layer_columns = [f"{layer}.{field}" for layer in LAYERS for field in ("sparsity", "bits")]
    assert list(frame.columns) == [*BASE_COLUMNS, *layer_columns]
    assert frame["number"].tolist() == list(TRIALS)
    assert frame["state"].tolist() == [TRIALS[n][0].name for n in TRIALS]
    by_number = frame.set_index("number")
    assert by_number.loc[1, "val_accuracy"] == 0.85
    assert math.isnan(by_number.loc[3, "val_accuracy"])  # the 0.0 of an untrained infeasible trial is no accuracy
    assert by_number.loc[5, "val_accuracy"] == 0.95  # a pruned trial's last intermediate value
    assert math.isnan(by_number.loc[6, "val_accuracy"]) and math.isnan(by_number.loc[9, "val_accuracy"])
    assert not by_number.loc[3, "feasible"] and by_number.loc[1, "feasible"]
    assert pd.isna(by_number.loc[9, "packed_bytes"]) and pd.isna(by_number.loc[9, "feasible"])
    assert by_number.loc[6, "fail_reason"].startswith("TrainingDivergedError")
    assert by_number.loc[4, "packed_bytes"] == 60_000 and by_number.loc[4, "compression_ratio"] == FP32_BYTES / 60_000
    assert by_number.loc[2, "fc.bits"] == 2 + 2 % 5 + 2 and by_number.loc[2, "conv1.sparsity"] == pytest.approx(0.1)
    assert by_number["repaired"].fillna(False).astype(bool).sum() == 2
    assert frame["datetime_start"].notna().sum() >= 9


def test_pareto_front_is_exactly_the_non_dominated_complete_trials(frame: pd.DataFrame) -> None:
    front = pareto_frame(frame)
    assert front["number"].tolist() == EXPECTED_FRONT
    assert front["packed_bytes"].is_monotonic_increasing and front["val_accuracy"].is_monotonic_increasing
    assert front["feasible"].tolist() == [True, True, True, False]
    assert set(front.columns) == set(frame.columns)


def test_pareto_front_matches_a_brute_force_check_and_keeps_ties() -> None:
    rng = np.random.default_rng(0)
    accuracy = rng.uniform(0.5, 0.9, size=60).round(2)
    size = rng.integers(10_000, 60_000, size=60)
    states = np.where(np.arange(60) % 7 == 3, "PRUNED", "COMPLETE")
    frame = pd.DataFrame({"number": range(60), "state": states, "val_accuracy": accuracy, "packed_bytes": size})
    complete = [i for i in range(60) if states[i] == "COMPLETE"]
    expected = [
        i
        for i in complete
        if not any(
            accuracy[j] >= accuracy[i] and size[j] <= size[i] and (accuracy[j] > accuracy[i] or size[j] < size[i])
            for j in complete
        )
    ]
    front = pareto_frame(frame)
    assert sorted(front["number"]) == expected and len(expected) >= 3

    twin = frame.loc[[expected[1]]].assign(number=60)  # an exact copy of a front trial: neither dominates
    with_twin = pareto_frame(pd.concat([frame, twin], ignore_index=True))
    assert sorted(with_twin["number"]) == sorted([*expected, 60])


def test_report_files_hold_every_trial_the_front_and_both_plots(report: dict[str, Path], frame: pd.DataFrame) -> None:
    folder = report["trials_csv"].parent
    assert sorted(path.name for path in folder.iterdir()) == ["pareto.csv", "pareto.html", "pareto.png", "trials.csv"]
    with report["trials_csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["number"]) for row in rows] == list(TRIALS)
    assert {"conv1.sparsity", "conv1.bits", "layer1.0.conv1.bits", "fc.sparsity"} <= set(rows[0])
    assert rows[6]["state"] == "FAIL" and rows[6]["val_accuracy"] == ""
    assert pd.read_csv(report["pareto_csv"])["number"].tolist() == EXPECTED_FRONT

    png = report["pareto_png"].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    html = report["pareto_html"].read_text(encoding="utf-8")
    assert len(html) > 1_000_000  # plotly.js is embedded, so the file works offline
    for number in (0, 1, 4, 5, 7):
        assert f'"trial #{number}"' in html
    assert '"trial #3"' not in html and '"trial #6"' not in html  # never evaluated: not plotted
    assert "target 50.0 KB" in html and "resnet20" in html


def test_empty_study_gives_empty_frames_and_still_writes_a_report(tmp_path: Path) -> None:
    study = make_study([])
    frame = trials_frame(study)
    assert frame.empty and list(frame.columns) == list(BASE_COLUMNS)
    assert pareto_frame(frame).empty
    paths = write_study_report(study, tmp_path)
    assert pd.read_csv(paths["trials_csv"]).empty
    assert paths["pareto_png"].read_bytes().startswith(PNG_MAGIC)
    assert "best feasible: none" in summary_table(frame, TARGET)


def test_summary_names_the_best_feasible_trial_and_ranks_the_top_five(frame: pd.DataFrame) -> None:
    text = summary_table(frame, TARGET, {"val": 0.915, "test": 0.917})
    lines = text.splitlines()
    assert "50,000 B" in lines[0] and "91.50%" in lines[0]
    assert "7 complete, 1 pruned, 1 fail, 1 running" in lines[1]
    best_line = next(line for line in lines if line.startswith("best feasible:"))
    assert "trial #1 " in best_line and "85.00%" in best_line and "45,000 B" in best_line and "-6.50 pt" in best_line
    table = lines[lines.index("top 5 feasible trials:") + 2 :]
    assert [line.split()[0] for line in table] == ["#1", "#2", "#0", "#8", "#7"]


def test_a_failed_write_leaves_the_previous_file_in_place(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = tmp_path / "pareto.png"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["pareto.png"]
    plot_pareto_png(frame, TARGET, path, model="resnet20")
    assert path.read_bytes().startswith(PNG_MAGIC)
