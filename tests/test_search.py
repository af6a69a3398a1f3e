"""The BO search: space, budget fitting, every sampler, resume after SIGINT, refusals, report."""

from __future__ import annotations

import copy
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import weakref
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from autocompress.allocation import SearchSpace, TargetUnreachableError, best_uniform_plan, check_target, fit_to_budget, plan_distortion
from autocompress.compress import compressible_layers
from autocompress.errors import AutocompressError
from autocompress.models import build_model
from autocompress.pack import SizeAccountant, estimate_size, read_packed
from autocompress.plan import LayerSetting, Plan
from autocompress.runner import load_settings, run_search
from autocompress.study._interrupt import InterruptGuard
from autocompress.study._samplers import SAMPLERS
from tests._tiny_search import settings_for


@pytest.fixture(scope="module")
def resnet20() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20")

def test_space_suggests_and_reproduces_plans(resnet20) -> None:
    space = SearchSpace(layers=tuple(compressible_layers(resnet20)), quantizers=("clipq", "kmeans"))
    plan = Plan.uniform(space.layers, sparsity=0.5, bits=4, quantizer="kmeans")
    trial = optuna.trial.FixedTrial(space.params_of(plan))
    assert space.suggest(trial).layers == plan.layers
    assert len(space.params_of(plan)) == 3 * 20


def test_relative_space_shifts_around_its_anchor_and_reproduces_plans(resnet20) -> None:
    absolute = SearchSpace(layers=tuple(compressible_layers(resnet20)), sparsity_max=0.95, bits_min=2, bits_max=6)
    space = absolute.around(Plan.uniform(absolute.layers, sparsity=0.8, bits=3, quantizer="clipq"))
    names = list(space.layers)
    plan = Plan(layers={name: LayerSetting(0.8 + (0.1 if i % 2 else -0.15), 3 + (i % 3) - 1) for i, name in enumerate(names)})
    params = space.params_of(plan)
    assert set(params) == {f"{name}.{kind}" for name in names for kind in ("sparsity_shift", "bits_shift")}
    suggested = space.suggest(optuna.trial.FixedTrial(params))
    for name in names:
        assert suggested.layers[name].bits == plan.layers[name].bits
        assert suggested.layers[name].sparsity == pytest.approx(plan.layers[name].sparsity)
    far = Plan.uniform(names, sparsity=0.0, bits=6, quantizer="clipq")  # outside the shifts: clamped to them
    clamped = space.suggest(optuna.trial.FixedTrial(space.params_of(far)))
    assert {(s.bits, round(s.sparsity, 6)) for s in clamped.layers.values()} == {(4, 0.6)}
    assert all(value == 0 for value in space.params_of(space.anchor).values())


def test_a_relative_search_runs_and_records_shifts(tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, sampler="tpe", study_name="rel", space="relative")
    run_search(settings, log=lambda _: None)
    study = optuna.load_study(study_name="rel", storage=settings.resolved_storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and all(t.user_attrs["feasible"] for t in complete)
    assert all(name.endswith(("sparsity_shift", "bits_shift")) for name in complete[0].params)
    anchors = [t for t in complete if t.user_attrs["strategy"].endswith("-warmstart") and not any(t.params.values())]
    assert anchors  # the anchor (the projection plan, here equal to the uniform one) is a warm start with no shift


def test_fit_to_budget_always_fits_and_leaves_fitting_plans_alone(resnet20) -> None:
    space = SearchSpace(layers=tuple(compressible_layers(resnet20)))
    rng = random.Random(0)
    sizes = SizeAccountant(resnet20, model_spec="resnet20")
    smallest = estimate_size(resnet20, space.smallest_plans()[0], model_spec="resnet20").total
    for _ in range(4):
        plan = Plan(layers={name: LayerSetting(rng.uniform(0, 0.95), rng.randint(2, 8)) for name in space.layers})
        target = rng.randint(smallest, 150_000)
        fitted = fit_to_budget(sizes, plan, space, target)
        assert fitted is not None
        assert estimate_size(resnet20, fitted, model_spec="resnet20").total <= target
        assert fit_to_budget(sizes, fitted, space, target) is fitted
    assert fit_to_budget(sizes, plan, space, smallest - 1) is None


def test_fit_to_budget_lowers_bits_when_sparsity_is_already_at_its_maximum(resnet20) -> None:
    space = SearchSpace(layers=tuple(compressible_layers(resnet20)))
    sizes = SizeAccountant(resnet20, model_spec="resnet20")
    plan = Plan.uniform(space.layers, sparsity=space.sparsity_max, bits=8, quantizer="clipq")
    smallest = sizes.total(space.smallest_plans()[0])
    for target in (smallest, smallest + 700, (smallest + sizes.total(plan)) // 2):
        fitted = fit_to_budget(sizes, plan, space, target)
        assert fitted is not None and sizes.total(fitted) <= target
        assert all(setting.sparsity == pytest.approx(space.sparsity_max) for setting in fitted.layers.values())
        assert min(setting.bits for setting in fitted.layers.values()) < 8


def test_targets_are_checked_before_any_training(resnet20) -> None:
    space = SearchSpace(layers=tuple(compressible_layers(resnet20)))
    sizes = SizeAccountant(resnet20, model_spec="resnet20")
    smallest = estimate_size(resnet20, space.smallest_plans()[0], model_spec="resnet20").total
    with pytest.raises(TargetUnreachableError, match=f"{smallest:,}"):
        check_target(sizes, space, smallest - 1)
    assert not check_target(sizes, space, smallest).trivial
    assert check_target(sizes, space, 10_000_000).trivial
    uniform = best_uniform_plan(sizes, space, 50_000)
    assert estimate_size(resnet20, uniform, model_spec="resnet20").total <= 50_000
    assert len({(s.sparsity, s.bits) for s in uniform.layers.values()}) == 1


@pytest.mark.parametrize("sampler", ["tpe", "gp", "cmaes", "random", "nsga2"])
def test_making_a_sampler_warns_about_nothing(sampler: str) -> None:
    """Optuna 4.9+ deprecates CMA-ES's ``sigma0``, which the cmaes entry sets on purpose: the user sees no warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = SAMPLERS[sampler].make(0, 3, lambda trial: [0.0])
    assert isinstance(made, optuna.samplers.BaseSampler)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_a_short_study_to_completion(
    sampler: str, tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, sampler=sampler, study_name=f"s-{sampler}")
    outcome = run_search(settings, log=lambda _: None)
    study = optuna.load_study(study_name=f"s-{sampler}", storage=settings.resolved_storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert study.metric_names == ["val_accuracy"]
    warm = [t.user_attrs["strategy"] for t in complete if t.user_attrs["strategy"].endswith("-warmstart")]
    assert warm[0] == "uniform-warmstart" and "sensitivity-warmstart" in warm  # (the projection here equals uniform: queued once)
    for trial in complete:
        assert trial.user_attrs["packed_bytes"] <= settings.target_bytes and trial.user_attrs["feasible"]
        assert list(trial.intermediate_values) == [1, 2]  # reports for the median pruner within 0.1 epoch
        assert trial.user_attrs["constraint"][0] <= 0
    best = yaml.safe_load((outcome.study_dir / "best.yaml").read_text())
    packed_bytes = os.path.getsize(outcome.study_dir / "best.acz")
    assert best["result"]["packed_bytes"] == packed_bytes <= settings.target_bytes
    assert read_packed(outcome.study_dir / "best.acz").n_bytes == packed_bytes
    for name in ("run.yaml", "trials.csv", "pareto.csv", "pareto.png", "pareto.html", "best_trial.yaml"):
        assert (outcome.study_dir / name).stat().st_size > 0, name


def completed_trials(database: Path) -> list[tuple[int, float]]:
    """(number, value) of the study's complete trials, read with plain sqlite3 so that the
    poll never creates tables while the search process is creating them."""
    if not database.exists():
        return []
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            rows = connection.execute(
                "SELECT t.number, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                "WHERE t.state = 'COMPLETE'"
            ).fetchall()
    except sqlite3.Error:  # tables not created yet
        return []
    return [(int(number), float(value)) for number, value in rows]


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """The command as a terminal user runs it: SIGINT at its default even when this test runs in a
    background job (where the shell ignores SIGINT and children inherit that)."""
    return subprocess.Popen([sys.executable, "-m", "autocompress.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_sigint_mid_search_then_rerun_completes_the_study(
    tiny_module: Path, tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(tiny_module), "OMP_NUM_THREADS": "1"}
    args = ["search", "--target-size", "6KB", "--model", "tinynet:tiny", "--checkpoint", str(tiny_checkpoint),
            "--data-dir", str(synthetic_data_dir),
            "--set", "val_size=200", "--trials", "8", "--epochs-per-trial", "4", "--final-epochs", "0.1",
            "--batch-size", "64", "--study-name", "resume", "--device", "cpu", "--sampler", "random",
            "--trial-score", "val_accuracy", "--space", "absolute", "--front", "off"]
    database = tmp_path / "studies" / "resume" / "study.db"
    storage = f"sqlite:///{database}"
    process = run_cli(*args, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 300
    finished_before: list[tuple[int, float]] = []
    while time.monotonic() < deadline and len(finished_before) < 2 and process.poll() is None:
        time.sleep(0.2)  # a trial takes a few seconds: interrupt right after the second one
        finished_before = completed_trials(database)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    assert "Traceback" not in stderr, stderr  # the stop the user asked for is one line, not a stack
    interrupted = optuna.load_study(study_name="resume", storage=storage).trials
    kept = {(t.number, t.value) for t in interrupted if t.state == optuna.trial.TrialState.COMPLETE}
    assert set(finished_before) <= kept and len(kept) < 8
    # wherever the stop landed (even between Optuna creating a trial and its objective), nothing is left
    # running: the rerun would wait for such a trial as another worker's
    assert not [t.number for t in interrupted if t.state == optuna.trial.TrialState.RUNNING]
    rerun = run_cli(*args, env=env, cwd=tmp_path)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    final = optuna.load_study(study_name="resume", storage=storage).trials
    complete = {(t.number, t.value) for t in final if t.state == optuna.trial.TrialState.COMPLETE}
    pruned = [t for t in final if t.state == optuna.trial.TrialState.PRUNED]
    assert kept <= complete and len(complete) + len(pruned) == 8  # --trials counts finished trials
    assert (tmp_path / "studies" / "resume" / "best.acz").exists()


def test_impossible_and_trivial_targets(tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TargetUnreachableError, match="smallest plan"):
        run_search(settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, target_size="100B"), log=lambda _: None)
    assert not (tmp_path / "tinynet_tiny-100B").exists()  # refused before anything was written
    messages: list[str] = []
    outcome = run_search(settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, target_size="10MB"), log=messages.append)
    assert any("no compression needed" in message for message in messages)
    best = yaml.safe_load((outcome.study_dir / "best.yaml").read_text())
    assert best["layers"] == {} and best["result"]["packed_bytes"] == os.path.getsize(outcome.study_dir / "best.acz")


def test_cli_refuses_bad_sizes_and_report_regenerates_from_storage(
    tiny_module: Path, tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(tiny_module), "OMP_NUM_THREADS": "1"}
    bad = run_cli("search", "--target-size", "1XB", env=env, cwd=tmp_path)
    _, stderr = bad.communicate(timeout=120)
    assert bad.returncode == 2 and stderr.startswith("error: --target-size 1XB: ") and "Traceback" not in stderr
    assert "cannot read '1XB' as a size" in stderr
    bad_timeout = run_cli("search", "--target-size", "50KB", "--time", "2x", env=env, cwd=tmp_path)
    _, stderr = bad_timeout.communicate(timeout=120)
    assert bad_timeout.returncode == 2 and "cannot read '2x' as a duration" in stderr and "Traceback" not in stderr
    tiny = run_cli("search", "--target-size", "200B", "--model", "tinynet:tiny", "--checkpoint", str(tiny_checkpoint),
                   "--data-dir", str(synthetic_data_dir), env=env, cwd=tmp_path)
    _, stderr = tiny.communicate(timeout=120)
    assert tiny.returncode == 2 and "smallest plan this search space allows" in stderr
    settings = settings_for(tmp_path / "studies", synthetic_data_dir, tiny_checkpoint, trials=2, study_name="rep")
    run_search(settings, log=lambda _: None)
    (settings.study_dir / "trials.csv").unlink()
    report = run_cli("report", "--study", "rep", env=env, cwd=tmp_path)
    stdout, stderr = report.communicate(timeout=120)
    assert report.returncode == 0, stderr
    assert (settings.study_dir / "trials.csv").exists() and "best feasible" in stdout


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_check() -> None:
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # SIG_IGN under nohup, e.g.
    try:
        swallow_a_ctrl_c_then_check()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, inherited)


def swallow_a_ctrl_c_then_check() -> None:
    with InterruptGuard() as guard:
        guard.check()  # nothing pressed: no effect
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass  # what a weakref or GC callback would do with it: drop it
        with pytest.raises(KeyboardInterrupt):
            guard.check(12)  # as an on_step callback


def test_a_ctrl_c_inside_a_weakref_callback_prints_no_traceback_and_is_raised_again() -> None:
    """Where the interpreter drops an exception (here a weakref callback, as SQLAlchemy registers), it
    hands it to ``sys.unraisablehook``, which prints "Exception ignored in ..." and a traceback; under
    the guard a dropped Ctrl-C does not reach the hook, and the next check raises it."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = sys.unraisablehook
    reached_the_hook: list[object] = []
    sys.unraisablehook = reached_the_hook.append

    class Collected:
        pass

    def on_collected(_reference: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)

    try:
        with InterruptGuard() as guard:
            target = Collected()
            reference = weakref.ref(target, on_collected)
            del target  # the callback runs here, and the interpreter drops its KeyboardInterrupt
            assert reference() is None and guard.requested
            with pytest.raises(KeyboardInterrupt):
                guard.check()
        assert sys.unraisablehook == reached_the_hook.append  # restored
    finally:
        sys.unraisablehook = before
        signal.signal(signal.SIGINT, inherited)
    assert reached_the_hook == []


@pytest.mark.parametrize(("field", "value"), [("space", "sideways"), ("sampler", "annealing"), ("pruner", "sometimes")])
def test_unknown_choices_in_settings_are_refused_with_the_allowed_ones(field: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(AutocompressError, match=f"--{field} {value}: must be one of .*got '{value}'"):
        load_settings(None, {"target_size": "50KB", field: value, "output_root": str(tmp_path)})
    assert not any(tmp_path.iterdir())  # nothing written


REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted([*(REPO / "studies").glob("*.yaml"), *(REPO / "benchmarks" / "presets").glob("*.yaml")])


@pytest.mark.parametrize("preset", PRESETS, ids=[path.name for path in PRESETS])
def test_every_shipped_preset_loads_into_valid_settings(preset: Path, tmp_path: Path) -> None:
    """The presets README and the benchmarks name are checked settings, not just YAML: a renamed or retired
    setting, or a value the rules refuse, fails here rather than in a user's first command."""
    checkpoint = yaml.safe_load(preset.read_text()).get("checkpoint")
    if checkpoint is not None and not (REPO / checkpoint).is_file():
        pytest.skip(f"{preset.name} names the pretrained weights {checkpoint}, absent here (they come with ../shared)")
    settings = load_settings(preset, {"output_root": str(tmp_path), "checkpoint": None if checkpoint is None
                                      else str(REPO / checkpoint)})
    assert settings.target_bytes > 0 and settings.model
    assert not any(tmp_path.iterdir())  # loading writes nothing


def test_the_projection_warm_start_fits_and_distorts_less_than_uniform(resnet20) -> None:
    from autocompress.allocation import plan_distortion
    from autocompress.strategies import projection_plan

    space = SearchSpace(layers=tuple(compressible_layers(resnet20)), bits_max=6)
    sizes = SizeAccountant(resnet20, model_spec="resnet20")
    uniform = best_uniform_plan(sizes, space, 50_000)
    context = type("Context", (), {"sizes": sizes, "space": space, "target_bytes": 50_000, "model_spec": "resnet20"})()
    projected = projection_plan(context)
    assert projected is not None and space.represents(projected)
    assert sizes.total(projected) <= 50_000 and estimate_size(resnet20, projected, model_spec="resnet20").total == sizes.total(projected)
    # (random weights: often equal; the real ResNet-20 case is in test_admm)
    assert plan_distortion(sizes, projected) <= plan_distortion(sizes, uniform)
    relative = space.around(projected)
    assert relative.represents(projected) and not relative.represents(Plan.uniform(space.layers, sparsity=0.0, bits=6))


def test_a_projection_that_prunes_layers_to_the_maximum_stays_inside_the_space(resnet20) -> None:
    # kept_count rounds, so (numel - kept) / numel at the fewest weights allowed can exceed sparsity_max by
    # less than one weight; such a plan was not representable and its warm start was silently dropped
    # (ResNet-56 at 100 KB). Near the smallest plan, the projection prunes many layers to the maximum.
    from autocompress.strategies import projection_plan

    space = SearchSpace(layers=tuple(compressible_layers(resnet20)), bits_max=6, sparsity_max=0.95)
    sizes = SizeAccountant(resnet20, model_spec="resnet20")
    target = int(sizes.total(Plan.uniform(space.layers, sparsity=0.95, bits=2)) * 1.3)
    context = type("Context", (), {"sizes": sizes, "space": space, "target_bytes": target, "model_spec": "resnet20"})()
    projected = projection_plan(context)
    assert projected is not None and sizes.total(projected) <= target
    at_maximum = [name for name, setting in projected.layers.items() if setting.sparsity == space.sparsity_max]
    assert at_maximum  # at exactly the bound, not a hair above it
    assert space.represents(projected)


def test_the_weighted_projection_at_all_ones_is_the_projection(resnet20) -> None:
    from autocompress.allocation import Projector, project_to_budget

    space = SearchSpace(layers=tuple(compressible_layers(resnet20)), bits_max=6, sparsity_max=0.95)
    sizes = SizeAccountant(resnet20, model_spec="resnet20")
    uniform = best_uniform_plan(sizes, space, 50_000)
    plain = project_to_budget(sizes, space, 50_000, seed=uniform)
    projector = Projector(sizes, space)
    ones = projector.project(50_000, seed=uniform, coefficients=dict.fromkeys(space.layers, 1.0))
    assert ones.plan.layers == plain.plan.layers and ones.distortion == plain.distortion
    coefficients = {name: 0.5 + index % 3 for index, name in enumerate(space.layers)}
    weighted = projector.project(50_000, seed=uniform, coefficients=coefficients)
    assert sizes.total(weighted.plan) == weighted.packed_bytes <= 50_000
    per_layer = {name: plan_distortion(sizes, Plan({name: setting})) for name, setting in weighted.plan.layers.items()}
    assert weighted.distortion == pytest.approx(sum(coefficients[name] * value for name, value in per_layer.items()), rel=1e-6)


def test_layers_are_grouped_by_their_role_in_a_stage() -> None:
    from autocompress.allocation import layer_groups

    layers = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.shortcut.0", "linear"]
    assert layer_groups(layers) == {
        "conv1": ("conv1",), "layer1.conv1": ("layer1.0.conv1", "layer1.1.conv1"), "layer1.conv2": ("layer1.0.conv2",),
        "layer2.conv1": ("layer2.0.conv1",), "layer2.shortcut": ("layer2.0.shortcut.0",), "linear": ("linear",)}
    assert layer_groups(["0", "3", "8"]) == {"0": ("0",), "3": ("3",), "8": ("8",)}  # a Sequential's layers


def test_the_cheap_score_is_repeatable_and_grows_with_compression(tiny_checkpoint: Path, synthetic_splits) -> None:
    from autocompress.allocation import PlanScorer, ScoreSettings
    from autocompress.models import build_model, load_checkpoint

    model = build_model("tinynet:tiny")
    load_checkpoint(model, tiny_checkpoint)
    scorer = PlanScorer(model, synthetic_splits.train, device=torch.device("cpu"), settings=ScoreSettings(images=256, bn_images=128))
    layers = list(compressible_layers(model))
    mild, harsh = (Plan.uniform(layers, sparsity=sparsity, bits=bits) for sparsity, bits in ((0.2, 6), (0.9, 2)))
    first, again = scorer.score_plan(mild), scorer.score_plan(mild)
    assert first.kl == again.kl and first.agreement == again.agreement  # fixed images, fixed BN batches
    assert 0 <= first.kl < scorer.score_plan(harsh).kl
    assert scorer.score_model(model).kl == pytest.approx(0.0, abs=1e-6)  # the baseline against itself
    assert 0.0 <= first.agreement <= 1.0












def test_a_kl_search_in_the_coefficient_space_records_three_fidelity_levels(
    tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, target_size="3KB", space="coefficients",
                            trial_score="kl", sampler="cmaes", trials=6, finetune_top=2, study_name="kl",
                            score_images=256, score_bn_images=128, front="2KB:8KB", front_trials=8, front_finetunes=2)
    messages: list[str] = []
    outcome = run_search(settings, log=messages.append)
    summary = next(message for message in messages if "best feasible:" in message)
    assert "front" not in summary  # the summary is about the target; the front points have budgets of their own
    study = optuna.load_study(study_name="kl", storage=settings.resolved_storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and study.metric_names == ["kl_to_baseline"]
    scored = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(scored) == 6 and all(t.user_attrs["fidelity"] == "score" and t.user_attrs["packed_bytes"] <= 3000 for t in scored)
    assert all(t.value == t.user_attrs["kl_to_baseline"] >= 0 for t in scored)
    warm = scored[0]
    assert warm.user_attrs["strategy"] == "projection-warmstart" and set(warm.params.values()) == {1.0}
    assert all(name.endswith(".coefficient") for name in warm.params) and not any(t.user_attrs.get("repaired") for t in scored)
    companion = optuna.load_study(study_name="kl.finetune", storage=settings.resolved_storage).trials
    fidelities = [t.user_attrs["fidelity"] for t in companion]
    assert fidelities.count("final") == 1 and 1 <= fidelities.count("finetune") <= 2 and 1 <= fidelities.count("front") <= 2
    finetuned = [t for t in companion if t.user_attrs["fidelity"] == "finetune"]
    best_parent = min(finetuned, key=lambda t: t.value).user_attrs["parent"]
    best = yaml.safe_load((outcome.study_dir / "best.yaml").read_text())
    assert best["result"]["trial"] == best_parent and best["result"]["packed_bytes"] <= 3000
    assert best["layers"] == study.trials[best_parent].user_attrs["plan"]
    assert os.path.getsize(outcome.study_dir / "best.acz") == best["result"]["packed_bytes"]
    # the front: the budget sampled over 2-8 KB, its points fine-tuned and drawn
    front = optuna.load_study(study_name="kl.front", storage=settings.resolved_storage)
    sampled = [t for t in front.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # each point's budget lies in the range and its file fits that budget (at the low end, just under 2 KB)
    assert len(sampled) == 8 and all(t.values[1] == t.user_attrs["packed_bytes"] <= t.user_attrs["target_bytes"]
                                     and 2000 <= t.user_attrs["target_bytes"] <= 8000 for t in sampled)
    assert [t.user_attrs["strategy"] for t in sampled[:6]] == ["projection-warmstart"] * 6
    points = [t for t in companion if t.user_attrs["fidelity"] == "front"]
    assert len(points) == min(2, len(front.best_trials)) and all(0 <= t.user_attrs["test_accuracy"] <= 1 for t in points)
    assert {t.user_attrs["front_trial"] for t in points} <= {t.number for t in front.best_trials}
    assert (outcome.study_dir / "front.png").stat().st_size > 20_000 and (outcome.study_dir / "front.csv").is_file()
    # a rerun finds every level done and fine-tunes nothing again, the final fine-tune included
    run_search(settings, log=lambda _: None)
    rerun = optuna.load_study(study_name="kl.finetune", storage=settings.resolved_storage).trials
    assert [t.user_attrs["fidelity"] for t in rerun] == fidelities
    assert len(optuna.load_study(study_name="kl.front", storage=settings.resolved_storage).trials) == 8




def test_a_study_keeps_the_score_it_was_created_with(tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path) -> None:
    from autocompress.strategies import objective_of
    from autocompress.study import open_study

    first = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, study_name="fixed")
    open_study(first, objective_of(first))
    with pytest.raises(AutocompressError, match="created to maximize .* score trials by kl"):
        other = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, study_name="fixed", trial_score="kl")
        open_study(other, objective_of(other))


def test_a_rerun_of_a_finished_search_keeps_its_final_fine_tune_unless_its_settings_change(
    tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, trials=3, study_name="again")
    first = run_search(settings, log=lambda _: None)
    packed = first.study_dir / "best.acz"
    written = (packed.read_bytes(), packed.stat().st_mtime_ns, (first.study_dir / "best.yaml").read_text())
    messages: list[str] = []
    second = run_search(settings, log=messages.append)
    assert any("final fine-tune of trial" in message and "done already" in message for message in messages), messages
    assert not any(message.startswith("final fine-tune of trial") for message in messages)
    assert (packed.read_bytes(), packed.stat().st_mtime_ns, (first.study_dir / "best.yaml").read_text()) == written
    assert second.best_plan is not None and second.best_plan.result == first.best_plan.result
    # the number format the fine-tune trained in is recorded; one trained in another format (as "auto" did on
    # this CPU before it meant bf16 here) is not reused
    from autocompress.engine import resolved_precision

    trains_in = resolved_precision(torch.device("cpu"), "auto")
    assert first.best_plan is not None and first.best_plan.result["trained_in"] == trains_in
    best_yaml = first.study_dir / "best.yaml"
    document = yaml.safe_load(best_yaml.read_text())
    document["result"]["trained_in"] = "fp32" if trains_in == "bf16" else "bf16"
    best_yaml.write_text(yaml.safe_dump(document, sort_keys=False))
    messages.clear()
    retrained = run_search(settings, log=messages.append)
    assert any(message.startswith("final fine-tune of trial") for message in messages), messages
    assert retrained.best_plan is not None and retrained.best_plan.result["trained_in"] == trains_in
    written = (packed.read_bytes(), packed.stat().st_mtime_ns, best_yaml.read_text())
    longer = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, trials=3, study_name="again", final_epochs=0.2)
    messages.clear()
    third = run_search(longer, log=messages.append)
    assert any(message.startswith("final fine-tune of trial") for message in messages), messages
    assert third.best_plan is not None and third.best_plan.result["settings"]["final_epochs"] == 0.2
    assert packed.stat().st_mtime_ns != written[1]


def test_a_rerun_of_a_one_plan_mode_keeps_its_trial_until_a_setting_that_shapes_it_changes(
    tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, mode="projection", study_name="single")
    first = run_search(settings, log=lambda _: None)
    packed = first.study_dir / "best.acz"
    stamp = packed.stat().st_mtime_ns
    messages: list[str] = []
    run_search(settings, log=messages.append)
    assert any(message.startswith("trial 0 already complete") for message in messages), messages
    assert packed.stat().st_mtime_ns == stamp
    # a best.yaml of an older version, written before some settings existed, is still reused: a setting it
    # lacks counts as that setting's default (what the older version did)
    best_yaml = first.study_dir / "best.yaml"
    document = yaml.safe_load(best_yaml.read_text())
    for added_later in ("finetune_top", "time_budget_seconds", "front_trials", "front_finetunes"):
        del document["result"]["settings"][added_later]
    best_yaml.write_text(yaml.safe_dump(document, sort_keys=False))
    messages.clear()
    run_search(settings, log=messages.append)
    assert any(message.startswith("trial 0 already complete") for message in messages), messages
    assert packed.stat().st_mtime_ns == stamp
    # settings that only the trial-based search reads are refused in a one-plan mode: they would change nothing
    with pytest.raises(AutocompressError, match="trials belongs to mode bo"):
        settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, mode="projection", study_name="single", trials=9)
    # a setting that shapes the plan makes another study: the rerun under it is refused, and the files stay
    moved = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, mode="projection", study_name="single", bits_max=4)
    with pytest.raises(AutocompressError, match=r"study 'single' was made with bits_max 6 \(now 4\)"):
        run_search(moved, log=lambda _: None)
    assert packed.stat().st_mtime_ns == stamp
    changed_final = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, mode="projection", study_name="single",
                                 final_epochs=0.2)
    messages.clear()
    changed = run_search(changed_final, log=messages.append)  # the final fine-tune's length is not what a study is
    assert not any("already complete" in message for message in messages)
    assert changed.best_plan is not None and changed.best_plan.result["trial"] == 1
    assert len(optuna.load_study(study_name="single", storage=settings.resolved_storage).trials) == 2


class _StopAtStep:
    """An interrupt guard that presses Ctrl-C at one training step, and counts the steps it saw."""

    def __init__(self, stop_at: int | None) -> None:
        self.stop_at, self.steps = stop_at, []

    def check(self, step: int | None = None, *_: object) -> None:
        if step is not None:
            self.steps.append(step)
        if step is not None and step == self.stop_at:
            raise KeyboardInterrupt


def test_an_interrupted_final_finetune_resumes_after_its_last_finished_epoch(
        tiny_module: Path, tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """1,800 training images in batches of 64: 28 steps an epoch, 84 in 3 epochs. Stopped at step 40, the
    rerun starts at step 29 (epoch 2) and ends with the weights of a run that was never stopped."""
    from autocompress.engine import resolved_precision
    from autocompress.search import SearchContext, prepare_context
    from autocompress.search._trials import finetune_plan, finetune_state_path

    def context_for(folder: str, **overrides: object) -> SearchContext:
        settings = settings_for(tmp_path / folder, synthetic_data_dir, tiny_checkpoint, final_epochs=3,
                                study_name="resume", **overrides)
        return prepare_context(settings, log=messages.append)

    messages: list[str] = []
    context = context_for("straight")
    plan = best_uniform_plan(context.sizes, context.space, context.target_bytes)
    straight = copy.deepcopy(context.baseline)
    context.interrupt = _StopAtStep(None)  # type: ignore[assignment]
    finetune_plan(straight, plan, context)
    assert context.interrupt.steps == list(range(1, 85))  # type: ignore[attr-defined]
    assert not list(context.settings.study_dir.glob("finetune-*.state"))  # gone once done

    context = context_for("stopped")
    state = finetune_state_path(context.baseline, plan, context)
    context.interrupt = _StopAtStep(40)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        finetune_plan(copy.deepcopy(context.baseline), plan, context)
    assert state.exists()
    other_lr = context_for("stopped", lr=0.02)  # another recipe never resumes this state
    assert finetune_state_path(other_lr.baseline, plan, other_lr) != state
    # nor one in another number format; "auto" shares the state of the format it trains in here, and fp32 on a
    # CPU the state of an older version's "auto" (which trained in fp32 on every CPU)
    trains_in = resolved_precision(context.device, "auto")
    same_format = context_for("stopped", precision=trains_in)
    assert finetune_state_path(same_format.baseline, plan, same_format) == state
    other_format = context_for("stopped", precision="fp32" if trains_in == "bf16" else "bf16")
    assert finetune_state_path(other_format.baseline, plan, other_format) != state
    with monkeypatch.context() as patched:
        patched.setattr("autocompress.engine._device.native_bf16", lambda device: False)
        legacy_auto = context_for("stopped")
        assert finetune_state_path(legacy_auto.baseline, plan, legacy_auto) == finetune_state_path(
            context.baseline, plan, context_for("stopped", precision="fp32"))
    other_plan = Plan(layers={**plan.layers, "0": LayerSetting(0.5, 4)})
    assert finetune_state_path(context.baseline, other_plan, context) != state

    resumed = copy.deepcopy(context.baseline)
    context.interrupt = _StopAtStep(None)  # type: ignore[assignment]
    finetune_plan(resumed, plan, context)
    assert context.interrupt.steps == list(range(29, 85))  # type: ignore[attr-defined]
    assert any("resuming the fine-tune from its last finished epoch" in message for message in messages)
    assert not state.exists()
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(expected, actual), name
