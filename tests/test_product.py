"""The product's promises: the default recipe end to end, the whole-job time budget, settings by mode, studies
that keep what they are, the short help, the generated reference page, and the manual's size."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from autocompress.cli import build_parser
from autocompress.cli._reference import reference_markdown
from autocompress.errors import AutocompressError, CheckpointError
from autocompress.models import build_model, load_checkpoint, save_checkpoint
from autocompress.runner import load_settings, run_search
from autocompress.search import JobClock
from autocompress.settings import TRIAL_SCORES, SearchSettings, SettingError
from autocompress.strategies import SCORINGS, CheapKL, check_settings, for_mode, reads, register_scoring
from autocompress.study import FINETUNE_SUFFIX, TrialRecord
from tests._tiny_search import settings_for

REPO = Path(__file__).resolve().parents[1]


def default_recipe(root: Path, data_dir: Path, checkpoint: Path, **overrides: object) -> SearchSettings:
    """The tiny model under the search's own defaults (the KL score, coefficients, CMA-ES, the front)."""
    values: dict[str, object] = dict(trials=6, space="coefficients", trial_score="kl", sampler="cmaes", front="auto",
                                     front_trials=8, front_finetunes=1, score_images=256, score_bn_images=128,
                                     quantizers="clipq_full", bits_min=1, distill=True)
    return settings_for(root, data_dir, checkpoint, **{**values, **overrides})


def search_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return list(subparsers.choices["search"]._actions)


def test_search_help_offers_at_most_35_options_grouped_by_mode() -> None:
    parser = build_parser()
    options = search_options(parser)
    assert len(options) <= 35, [action.option_strings for action in options]
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    titles = [group.title for group in subparsers.choices["search"]._action_groups]
    assert {"mode admm", "mode bayesbits"} <= set(titles)
    assert any(title.startswith("mode bo") for title in titles)


def test_the_reference_page_is_generated_from_the_declarations() -> None:
    page = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    assert page == reference_markdown(), "docs/reference.md is stale: python -m autocompress.cli._reference docs/reference.md"
    assert "`gate_lr`" in page and "**`target_bytes`**" in page


def test_the_manual_is_at_most_15000_bytes_and_starts_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_bytes()
    assert len(readme) <= 15000
    text = readme.decode()
    first_commands = [block.split("```")[0].strip() for block in text.split("```bash")[1:3]]
    assert first_commands[0].startswith("python3 -m venv .venv") and "autocompress search" in first_commands[0]
    assert first_commands[1] == 'python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" && .venv/bin/python -m pytest -q'
    assert first_commands[1] in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize(("mode", "values", "belongs"), [
    ("admm", {"gate_lr": 0.1}, "mode bayesbits"),
    ("bayesbits", {"trials": 5}, r"mode bo \(or random\)"),
    ("admm", {"time_budget_seconds": 600}, r"mode bo \(or random\)"),
    ("bo", {"trial_score": "val_accuracy", "finetune_top": 2}, "mode bo with trial_score kl"),
    ("bo", {"admm_epochs": 3}, "mode admm"),
])
def test_a_setting_of_another_mode_is_refused_naming_its_mode(mode: str, values: dict, belongs: str) -> None:
    with pytest.raises(SettingError, match=f"belongs to {belongs}; this search runs mode {mode}"):
        check_settings(SearchSettings(target_bytes=50000, mode=mode, **values))


def test_a_setting_of_another_mode_at_its_default_is_not_a_mistake() -> None:
    settings = SearchSettings(target_bytes=50000, mode="admm", trials=60, gate_lr=0.3)
    check_settings(settings)
    assert settings.mode == "admm"


def test_for_mode_drops_what_the_other_mode_does_not_read() -> None:
    settings = SearchSettings(target_bytes=50000, trials=7, sampler="tpe", final_epochs=2)
    moved = for_mode(settings, "admm", admm_epochs=1.0)
    assert (moved.mode, moved.trials, moved.sampler, moved.final_epochs, moved.admm_epochs) == ("admm", 60, "cmaes", 2, 1.0)


def test_the_default_recipe_runs_end_to_end_with_its_front(tiny_checkpoint: Path, synthetic_data_dir: Path,
                                                           tmp_path: Path) -> None:
    settings = default_recipe(tmp_path, synthetic_data_dir, tiny_checkpoint, study_name="recipe")
    assert (settings.space, settings.trial_score, settings.sampler, settings.resolved_front) == (
        "coefficients", "kl", "cmaes", [3000, 24000])
    messages: list[str] = []
    outcome = run_search(settings, log=messages.append)
    folder = tmp_path / "recipe"
    assert outcome.packed_path is not None and outcome.packed_path.stat().st_size <= 6000
    assert (folder / "front.png").is_file() and (folder / "front.csv").is_file()
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["result"]["settings"]["distill"] is True
    assert any("distilled from the baseline" in message for message in messages)
    front_index = next(index for index, message in enumerate(messages) if message.startswith("front:"))
    final_index = next(index for index, message in enumerate(messages) if message.startswith("final fine-tune"))
    assert front_index < final_index  # the front comes before the final fine-tune, which fills the time left


def test_the_time_budget_sizes_the_final_finetune_to_the_time_left(tiny_checkpoint: Path, synthetic_data_dir: Path,
                                                                   tmp_path: Path) -> None:
    settings = default_recipe(tmp_path, synthetic_data_dir, tiny_checkpoint, study_name="timed", time_budget_seconds=40)
    messages: list[str] = []
    run_search(settings, log=messages.append)
    sized = [message for message in messages if message.startswith("final fine-tune sized to --time")]
    assert len(sized) == 1, messages
    epochs = float(sized[0].split(": ")[1].split(" epochs")[0])
    steps = int(sized[0].split("(")[1].split(" steps")[0])
    best = yaml.safe_load((tmp_path / "timed" / "best.yaml").read_text())
    assert best["result"]["settings"]["final_epochs"] == pytest.approx(epochs, abs=0.005)
    assert steps >= 10  # the tiny model's steps take milliseconds: 40 s hold many of them
    assert best["result"]["settings"]["time_budget_seconds"] == 40


def test_the_clock_gives_the_search_its_share_and_counts_down() -> None:
    clock = JobClock(time.monotonic() - 30, 100.0)
    assert 69 < clock.remaining() <= 70
    assert clock.search_remaining() == 0.0  # a quarter of 100 s has passed
    assert 4 < clock.search_remaining(0.35) <= 5
    assert len(clock.end_text()) == 8


def test_a_rerun_under_another_target_is_refused_and_keeps_the_study_s_files(
    tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, trials=2, study_name="kept")
    run_search(settings, log=lambda _: None)
    before = {path.name: path.read_bytes() for path in (tmp_path / "kept").iterdir() if path.suffix in (".yaml", ".acz")}
    other = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, trials=2, study_name="kept", target_size="5KB")
    with pytest.raises(AutocompressError, match=r"study 'kept' was made with target_bytes 6000 \(now 5000\).*--study-name"):
        run_search(other, log=lambda _: None)
    after = {path.name: path.read_bytes() for path in (tmp_path / "kept").iterdir() if path.suffix in (".yaml", ".acz")}
    assert after == before  # best.yaml, best.acz and run.yaml untouched
    more = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, trials=3, study_name="kept")
    run_search(more, log=lambda _: None)  # more trials of the same study: a resume, not another study
    study = optuna.load_study(study_name="kept", storage=more.resolved_storage)
    assert len(study.trials) == 3


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    model = build_model("resnet20")
    with torch.no_grad():
        model.layer2[1].conv2.weight[0, 0, 0, 0] = float("inf")
    save_checkpoint(tmp_path / "inf.th", model)
    with pytest.raises(CheckpointError, match=r"tensor layer2\.1\.conv2\.weight holds 1 NaN or infinite value"):
        load_checkpoint(build_model("resnet20"), tmp_path / "inf.th")


def test_a_preset_that_gives_a_key_twice_is_refused(tmp_path: Path) -> None:
    preset = tmp_path / "twice.yaml"
    preset.write_text("target_size: 50KB\ntrials: 5\ntrials: 9\n")
    with pytest.raises(AutocompressError, match=r"line 3: setting 'trials' is given twice \(first on line 2\)"):
        load_settings(preset, {})


def test_set_reaches_every_setting_and_names_itself_in_errors() -> None:
    settings = load_settings(None, {"target_size": "50KB"}, {"score_images": "2048", "warm_start": "false"})
    assert (settings.score_images, settings.warm_start) == (2048, False)
    with pytest.raises(AutocompressError, match=r"--set score_images=8: must be a whole number of at least 16"):
        load_settings(None, {"target_size": "50KB"}, {"score_images": "8"})


def test_a_new_short_list_rule_is_a_registered_subclass_without_a_flag(
    tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    listed: list[list[int]] = []

    class TopTwoAndLast(CheapKL):
        name = "kl-top2-last"

        def shortlist(self, ranked: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
            chosen = [*ranked[:2], ranked[-1]] if len(ranked) > 2 else ranked
            listed.append([trial.number for trial in chosen])
            return chosen

    register_scoring(TopTwoAndLast, TRIAL_SCORES["kl"])
    try:
        settings = default_recipe(tmp_path, synthetic_data_dir, tiny_checkpoint, study_name="rule",
                                  trial_score="kl-top2-last", front="off", space="absolute", sampler="random")
        assert reads(settings, "kl")  # a variant of the KL score takes the kl settings
        run_search(settings, log=lambda _: None)
        companion = optuna.load_study(study_name="rule" + FINETUNE_SUFFIX, storage=settings.resolved_storage)
        short = [TrialRecord.of(trial).parent for trial in companion.trials if TrialRecord.of(trial).fidelity == "finetune"]
        assert listed and sorted(short) == sorted(listed[0])  # exactly the rule's plans got the short fine-tune
        assert len(short) >= 2
    finally:
        SCORINGS.pop("kl-top2-last")
        TRIAL_SCORES.pop("kl-top2-last")


def test_a_python_caller_gets_the_registry_checks_before_anything_is_written(tmp_path: Path) -> None:
    settings = SearchSettings(target_bytes=50000, mode="annealing", output_root=str(tmp_path))  # the form is fine
    with pytest.raises(SettingError, match="mode must be one of bo, random, admm"):
        run_search(settings)
    with pytest.raises(SettingError, match="gate_lr belongs to mode bayesbits"):
        run_search(SearchSettings(target_bytes=50000, gate_lr=0.1, output_root=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []
