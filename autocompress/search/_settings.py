"""The effective settings of a search: preset YAML, then command-line flags; saved as ``run.yaml``.

Every setting is declared once, below, with its flag, help text and rule (``_options``). The
dataclass applies the rules whatever the values' source; :func:`load_settings` adds where a bad value
came from (the flag, or the preset's file and line) to the one-line error.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autocompress.data import dataset_names
from autocompress.engine import PRECISIONS, distillation_problem
from autocompress.errors import AutocompressError
from autocompress.files import write_text
from autocompress.plan import MAX_BITS, MIN_BITS
from autocompress.quantizers import quantizer_names
from autocompress.search._coefficients import GROUPINGS
from autocompress.search._registry import registered, strategy_names
from autocompress.search._samplers import pruner_names, sampler_names
from autocompress.search._score import TRIAL_SCORES, ScoreSettings, TrialObjective
from autocompress.search._space import SPACES, space_problem
from autocompress.search.options import (
    SettingError,
    apply_readers,
    choice,
    choices,
    duration,
    existing_file,
    folder,
    integer,
    number,
    option,
    options_of,
    plain_name,
    size_range,
    sizes,
    switch,
    text,
)
from autocompress.search.options import size as size_reader

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"


def _datasets() -> tuple[str, ...]:
    return tuple(dataset_names())


@dataclass
class SearchSettings:
    """Everything a search depends on; units in the names (bytes, epochs, seconds)."""

    target_bytes: int = option(help="byte budget of the packed file: 50KB, 1MB, 512KiB, 50000", read=size_reader(),
                               flag="--target-size", metavar="SIZE")
    model: str = option("resnet18", help="registered model (resnet18, resnet20, ...) or package.module:factory",
                        read=text(), flag="--model")
    checkpoint: str | None = option(None, help="trained weights of the model; without them a baseline is trained first "
                                               "(slow on a CPU)", read=existing_file("the model's weights"), flag="--checkpoint")
    dataset: str = option("cifar10", help="data set", read=choice(_datasets), flag="--dataset")
    data_dir: str = option("data", help="folder holding cifar-10-batches-py (downloaded there when online)",
                           read=folder(), flag="--data-dir")
    mode: str = option("bo", help="how the plan is chosen",
                       read=choice(strategy_names), flag="--mode")
    sampler: str = option("tpe", help="Optuna sampler of the BO study", read=choice(sampler_names), flag="--sampler")
    pruner: str = option("median", help="Optuna pruner: stops weak trials early", read=choice(pruner_names), flag="--pruner")
    sampler_startup_trials: int = option(10, help="random trials before a model-based sampler takes over",
                                         read=integer(minimum=0), flag="--startup-trials")
    trials: int = option(40, help="finished trials of the study in all (a resumed study counts its own)",
                         read=integer(minimum=1), flag="--trials")
    timeout_seconds: float | None = option(None, help="stop starting trials after this long: 7200, 2h, 90m",
                                           read=duration(), flag="--timeout", metavar="DURATION")
    storage: str | None = option(None, help="Optuna storage (default sqlite:///OUTPUT_ROOT/STUDY/study.db): any SQLAlchemy "
                                            "URL, e.g. postgresql://user:password@host/db for workers on many machines, "
                                            "or journal:path/study.log", read=text(), flag="--storage", metavar="URL")
    study_name: str | None = option(None, help="study and folder name (default MODEL-TARGETB[-MODE]); the same name "
                                               "resumes the study, and processes with the same storage and name share it",
                                    read=plain_name(), flag="--study-name", metavar="NAME")
    output_root: str = option("studies", help="folder of study folders", read=folder(), flag="--output-root")
    epochs_per_trial: float = option(0.5, help="fine-tuning per trial, in epochs (fractions allowed)",
                                     read=number(minimum=0), flag="--epochs-per-trial")
    final_epochs: float = option(3.0, help="fine-tuning of the chosen plan at the end", read=number(minimum=0),
                                 flag="--final-epochs")
    distill: bool = option(False, help="the final fine-tune also learns from the uncompressed model's soft outputs "
                                       "(knowledge distillation; about 15 % more time per step)",
                           read=switch(), flag="--distill", const=True)
    distill_temperature: float = option(4.0, help="softmax temperature of --distill", read=number(above=0),
                                        flag="--distill-temperature")
    distill_weight: float = option(0.9, help="share of the teacher term in the --distill loss", read=number(0, 1),
                                   flag="--distill-weight")
    lr: float = option(0.01, help="fine-tuning learning rate (cosine to 0)", read=number(above=0), flag="--lr")
    batch_size: int = option(128, help="images per training step", read=integer(minimum=1), flag="--batch-size")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N", read=text(DEVICE_PATTERN, "auto, cpu, cuda or cuda:N"),
                         flag="--device")
    precision: str = option("auto", help="number format of training steps: auto (bf16 on CUDA and on a CPU with "
                                         "AVX512-BF16 or AMX, where it is about 2x faster; fp32 elsewhere), fp32, or "
                                         "bf16 (also on a CPU without them, where it is slower); evaluation and scoring "
                                         "stay fp32 on a CPU",
                            read=choice(lambda: PRECISIONS), flag="--precision")
    seed: int = option(0, help="seed of training and sampling", read=integer(minimum=0), flag="--seed")
    val_size: int = option(5000, help="validation images carved from the training set (they choose; test only reports)",
                           read=integer(minimum=1), flag="--val-size")
    split_seed: int = option(0, help="seed of the stratified train/val split", read=integer(minimum=0), flag="--split-seed")
    sparsity_min: float = option(0.0, help="least sparsity of a layer (share of its weights pruned)",
                                 read=number(minimum=0, below=1), flag="--min-sparsity")
    sparsity_max: float = option(0.95, help="most sparsity of a layer", read=number(minimum=0, below=1),
                                 flag="--max-sparsity")
    bits_min: int = option(2, help="fewest bits of a layer's codes", read=integer(MIN_BITS, MAX_BITS), flag="--min-bits")
    bits_max: int = option(8, help="most bits of a layer's codes", read=integer(MIN_BITS, MAX_BITS), flag="--max-bits")
    quantizers: list[str] = option(help="comma-separated quantizers; several are searched per layer",
                                   read=choices(quantizer_names), flag="--quantizers", default_factory=lambda: ["clipq"])
    baseline_epochs: float = option(30.0, help="training of a baseline when no checkpoint is given", read=number(above=0),
                                    flag="--baseline-epochs")
    warm_start: bool = option(True, help="start the BO study from the uniform, projection and sensitivity plans",
                              read=switch(), flag="--no-warm-start", const=False)
    n_jobs: int = option(1, help="worker processes on this machine (one per GPU where there are several)",
                         read=integer(minimum=1), flag="--n-jobs")
    worker: bool = option(False, help="join the study as a worker: run trials only, and leave the final fine-tune and "
                                      "files to the process started without --worker", read=switch(), flag="--worker",
                          const=True)
    heartbeat_seconds: int = option(30, help="seconds between a running trial's heartbeats; a trial silent for three is "
                                             "taken as its worker's death, marked failed and re-queued",
                                    read=integer(minimum=1), flag="--heartbeat")
    max_retries: int = option(2, help="times a dead worker's trial is re-queued", read=integer(minimum=0),
                              flag="--max-retries")
    space: str = option("absolute", help="what the sampler searches: absolute per-layer values, shifts around the "
                                         "projection plan, or per-group coefficients that the projection turns into a "
                                         "plan on the exact budget", read=choice(lambda: SPACES), flag="--space")
    coefficient_groups: str = option("role", help="coefficients space: one coefficient per group of layers with the same "
                                                  "role in a stage, or per layer", read=choice(lambda: GROUPINGS),
                                     flag="--coefficient-groups")
    coefficient_range: float = option(4.0, help="coefficients space: each coefficient lies in [1/R, R]",
                                      read=number(above=1), flag="--coefficient-range")
    trial_score: str = option("val_accuracy", help="what each trial is scored by", read=choice(lambda: tuple(TRIAL_SCORES)),
                              flag="--trial-score")
    score_images: int = option(1024, help="kl score: training images the KL is averaged over", read=integer(minimum=16),
                               flag="--score-images")
    score_bn_images: int = option(512, help="kl score: augmented training images behind the re-estimated BN statistics",
                                  read=integer(minimum=1), flag="--score-bn-images")
    score_steps: int = option(0, help="kl score: distillation steps under the plan before scoring", read=integer(minimum=0),
                              flag="--score-steps")
    score_temperature: float = option(1.0, help="kl score: temperature T of the KL (both outputs softened by T, the KL "
                                                "scaled by T^2); a larger T weighs every image's whole output, not only "
                                                "the few confidently wrong ones, and is less noisy",
                                      read=number(above=0), flag="--score-temperature")
    front: list[int] | None = option(None, help="kl score: after the search, sample the budget too over LOW:HIGH "
                                                "(e.g. 25KB:200KB) and write the accuracy/size front (front.png)",
                                     read=size_range(), flag="--front")
    front_trials: int = option(60, help="front: trials that sample coefficients and the budget", read=integer(minimum=1),
                               flag="--front-trials")
    front_finetunes: int = option(4, help="front: points of the front given the short fine-tune", read=integer(minimum=0),
                                  flag="--front-finetunes")
    rescore_top: int = option(0, help="kl score: after the search, score this many of the best-scored plans (and the "
                                      "projection warm start) again on --rescore-images training images the search never "
                                      "saw, and short-list by that score (0: short-list by the search's own score)",
                              read=integer(minimum=0), flag="--rescore-top")
    rescore_images: int = option(4096, help="kl score: training images of the re-score (--rescore-top), none of them the "
                                            "search's own", read=integer(minimum=16), flag="--rescore-images")
    finetune_top: int = option(3, help="kl score: how many of the best-scored plans get the short fine-tune "
                                       "(--epochs-per-trial); the best of them gets the final one",
                               read=integer(minimum=1), flag="--finetune-top")
    finetune_projection: bool = option(False, help="kl score: the projection warm start gets the short fine-tune too, so "
                                                   "the search returns a plan of its own only when that plan is also "
                                                   "closer to the baseline than the warm start after the short fine-tune",
                                       read=switch(), flag="--finetune-projection", const=True)
    finetune_seeds: int = option(0, help="kl score: 0: each short fine-tune has a data order of its own (seed + trial "
                                         "number); N: every short-listed plan is fine-tuned with the same N seeds (seed, "
                                         "seed+1, ...) and ranked by its mean KL, so the comparison is not decided by "
                                         "which plan drew the luckier data order (common random numbers)",
                                 read=integer(minimum=0), flag="--finetune-seeds")
    finetune_distill: bool = option(False, help="kl score: the short fine-tune learns from the baseline's soft outputs "
                                                "as well as the labels (--distill-temperature, --distill-weight), as a "
                                                "distilled final fine-tune does, so that it ranks plans by what the final "
                                                "one will make of them",
                                    read=switch(), flag="--finetune-distill", const=True)
    race_top: int = option(1, help="kl score: how many of the short-fine-tuned plans start the final fine-tune; after "
                                   "--race-epochs the one closest to the baseline on the validation split (KL) carries "
                                   "on and the others stop (1: no race, the best after the short fine-tune goes on)",
                           read=integer(minimum=1), flag="--race-top")
    race_epochs: int = option(3, help="race: epochs of the final fine-tune each racing plan gets before the choice",
                              read=integer(minimum=1), flag="--race-epochs")
    targets: list[int] | None = option(None, help="admm: a sweep of targets, e.g. 200KB,100KB,50KB (one run each)",
                                       read=sizes(), flag="--targets", metavar="SIZES")
    admm_epochs: float = option(2.0, help="admm: epochs of ADMM training before the plan is made hard",
                                read=number(above=0), flag="--admm-epochs")
    projections_per_epoch: int = option(4, help="admm: projections onto the size budget (Z-steps) per epoch",
                                        read=integer(minimum=1), flag="--projections-per-epoch")
    rho_start: float = option(0.01, help="admm: penalty weight at the start (grows geometrically)", read=number(above=0),
                              flag="--rho-start")
    rho_end: float = option(1.0, help="admm: penalty weight at the last projection", read=number(above=0),
                            flag="--rho-end")
    gate_epochs: float = option(1.0, help="bayesbits: epochs of training the weights and the gates together before "
                                          "the plan is made hard", read=number(above=0), flag="--gate-epochs")
    gate_groups: str = option("kernel", help="bayesbits: what one pruning gate of a convolution shuts: an output "
                                             "channel, or a kernel (one output x input channel pair)",
                              read=choice(lambda: ("channel", "kernel")), flag="--gate-groups")
    gate_masks: str = option("magnitude", help="bayesbits: which weights the hard plan keeps: in each layer the largest, "
                                              "as many as its gates kept (magnitude), or exactly the groups its gates kept",
                             read=choice(lambda: ("magnitude", "gates")), flag="--gate-masks")
    gate_lr: float = option(0.3, help="bayesbits: Adam learning rate of the gates' log-alpha", read=number(above=0),
                            flag="--gate-lr")

    def __post_init__(self) -> None:
        apply_readers(self)
        for fields, problem in _cross_problems(self):
            if problem:
                raise SettingError(fields, problem)

    @property
    def resolved_targets(self) -> list[int]:
        """The targets of this run, largest first (one unless an ADMM sweep)."""
        return sorted(set(self.targets), reverse=True) if self.targets else [self.target_bytes]

    @property
    def resolved_study_name(self) -> str:
        """``study_name``, else ``MODEL-TARGETB`` for the BO mode and ``MODEL-TARGET(S)B-MODE`` for the others."""
        if self.study_name:
            return self.study_name
        model = self.model.replace(":", "_").replace(".", "_").replace("/", "_")
        sweep = "-".join(f"{target}B" for target in self.resolved_targets)
        return f"{model}-{sweep}" if self.mode == "bo" else f"{model}-{sweep}-{self.mode}"

    @property
    def study_dir(self) -> Path:
        return Path(self.output_root) / self.resolved_study_name

    @property
    def resolved_storage(self) -> str:
        return self.storage or f"sqlite:///{self.study_dir / 'study.db'}"

    @property
    def objective(self) -> TrialObjective:
        """What this search's trials are scored by (metric name and direction)."""
        return TRIAL_SCORES[self.trial_score]

    @property
    def score_settings(self) -> ScoreSettings:
        return ScoreSettings(images=self.score_images, bn_images=self.score_bn_images, steps=self.score_steps,
                             temperature=self.score_temperature, lr=self.lr, seed=self.split_seed)

    @property
    def num_classes(self) -> int:
        return 100 if self.dataset == "cifar100" else 10

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _cross_problems(settings: SearchSettings) -> list[tuple[tuple[str, ...], str | None]]:
    """The rules that tie several settings together: (the fields, what is wrong or None)."""
    return [
        (("sparsity_min", "sparsity_max", "bits_min", "bits_max", "quantizers"),
         space_problem(settings.sparsity_min, settings.sparsity_max, settings.bits_min, settings.bits_max,
                       tuple(settings.quantizers))),
        (("distill_temperature", "distill_weight"), distillation_problem(settings.distill_temperature, settings.distill_weight)),
        (("rho_start", "rho_end"), None if settings.rho_start <= settings.rho_end else
         f"rho_start ({settings.rho_start:g}) must not exceed rho_end ({settings.rho_end:g}): the ADMM penalty only grows"),
        (("targets", "mode"), None if settings.targets is None or settings.mode == "admm" else
         "targets (a sweep of targets) needs mode admm; the other modes have one target (target_size)"),
        (("n_jobs", "worker", "mode"), None if settings.mode == "bo" or (settings.n_jobs == 1 and not settings.worker) else
         f"n_jobs and worker apply to mode bo, where trials can run side by side; mode {settings.mode} runs in one process"),
        (("front", "space", "trial_score"),
         None if settings.front is None or (settings.space == "coefficients" and settings.trial_score == "kl") else
         "front (the budget sampled over a range) needs space coefficients and trial_score kl, where a trial takes seconds"),
        (("rescore_top", "trial_score"), None if settings.rescore_top == 0 or settings.trial_score == "kl" else
         "rescore_top (a second score on fresh images) re-scores plans of the kl score: it needs trial_score kl"),
        (("finetune_projection", "trial_score"), None if not settings.finetune_projection or settings.trial_score == "kl"
         else "finetune_projection (the projection in the short fine-tune) is a level of the kl score: it needs trial_score kl"),
        (("finetune_seeds", "trial_score"), None if settings.finetune_seeds == 0 or settings.trial_score == "kl" else
         "finetune_seeds (shared seeds for the short fine-tune) is a level of the kl score: it needs trial_score kl"),
        (("finetune_distill", "trial_score"), None if not settings.finetune_distill or settings.trial_score == "kl" else
         "finetune_distill (a distilled short fine-tune) is a level of the kl score: it needs trial_score kl"),
        (("race_top", "trial_score", "finetune_top"),
         None if settings.race_top == 1 or (settings.trial_score == "kl" and settings.race_top <= settings.finetune_top) else
         f"race_top ({settings.race_top}) races plans of the kl score's short list: it needs trial_score kl and at most "
         f"finetune_top ({settings.finetune_top}) plans"),
        (("race_top", "race_epochs", "final_epochs"),
         None if settings.race_top == 1 or settings.race_epochs < settings.final_epochs else
         f"race_epochs ({settings.race_epochs}) must be fewer than final_epochs ({settings.final_epochs:g}): the winner of "
         "the race carries on to the end of the final fine-tune"),
        registered(settings.mode).settings_problem(settings) or ((), None),
    ]


SETTING_OPTIONS = options_of(SearchSettings)
_ALIASES = {
    **{declared.flag.lstrip("-").replace("-", "_"): name for name, declared in SETTING_OPTIONS.items() if declared.flag},
    "target_bytes": "target_bytes",
    "timeout": "timeout_seconds",
}


@dataclass(frozen=True)
class Source:
    """Where a value came from, for error messages: a flag, or a preset's file and line."""

    flag: str | None = None
    preset: Path | None = None
    line: int | None = None
    key: str | None = None

    def describe(self, value: Any) -> str:
        if self.flag is not None:
            shown = "" if isinstance(value, bool) else f" {value}"
            return f"{self.flag}{shown}"
        return f"{self.preset}, line {self.line} ({self.key})"


def load_settings(preset: Path | str | None, flags: dict[str, Any]) -> SearchSettings:
    """Preset values (if any), then every flag value that is not None, checked together.

    ``flags`` maps setting names (or their flag-style aliases) to raw values. Any problem is one
    :class:`AutocompressError` naming the setting, where it came from, and what is allowed."""
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    if preset is not None:
        for key, (value, line) in read_preset(Path(preset)).items():
            name = _setting_name(key, Path(preset), line)
            values[name], sources[name] = value, Source(preset=Path(preset), line=line, key=key)
    for key, value in flags.items():
        if value is None:
            continue
        name = _ALIASES.get(key, key)
        if name not in SETTING_OPTIONS:
            raise AutocompressError(f"unknown setting {key!r}")
        values[name], sources[name] = value, Source(flag=SETTING_OPTIONS[name].flag or f"{name}=")
    if "target_bytes" not in values:
        if values.get("targets"):
            values["target_bytes"] = _largest_target(values, sources)
        else:
            raise AutocompressError("no target: pass --target-size (e.g. 50KB, 1MB) or set target_size in the preset")
    try:
        return SearchSettings(**values)
    except SettingError as error:
        raise AutocompressError(located(error, values, sources)) from None


def located(error: SettingError, values: dict[str, Any], sources: dict[str, Source]) -> str:
    """The error with the source of the first of its fields that was given (flag or preset line)."""
    for name in error.fields:
        if name in sources:
            return f"{sources[name].describe(values[name])}: {error.problem}"
    return str(error)


def _largest_target(values: dict[str, Any], sources: dict[str, Source]) -> Any:
    try:
        return max(SETTING_OPTIONS["targets"].read(values["targets"]))
    except ValueError as error:
        raise AutocompressError(f"{sources['targets'].describe(values['targets'])}: targets {error}") from None


def _setting_name(key: str, preset: Path, line: int) -> str:
    name = _ALIASES.get(key, key)
    if name in SETTING_OPTIONS:
        return name
    known = sorted(set(SETTING_OPTIONS) | set(_ALIASES))
    close = difflib.get_close_matches(key, known, n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; the settings are: {', '.join(sorted(SETTING_OPTIONS))}"
    raise AutocompressError(f"{preset}, line {line}: unknown setting {key!r}{hint}")


def read_preset(path: Path) -> dict[str, tuple[Any, int]]:
    """The preset's settings with the line each is on; one clear error for a missing or malformed file."""
    if path.is_dir():
        raise AutocompressError(f"preset {path} is a directory; give a YAML file such as studies/resnet20-50KB.yaml")
    if not path.is_file():
        raise AutocompressError(f"preset {path} does not exist; the presets are in studies/*.yaml")
    content = path.read_text(encoding="utf-8", errors="replace")
    try:
        node = yaml.compose(content, Loader=yaml.SafeLoader)
        document = yaml.safe_load(content)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise AutocompressError(f"{path}{where}: not valid YAML ({reason}); fix the file and run again") from None
    if document is None:
        return {}
    if not isinstance(document, dict) or not isinstance(node, yaml.MappingNode):
        raise AutocompressError(f"{path}: a preset is a mapping of settings (key: value per line), got "
                                f"{type(document).__name__}")
    lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
    return {str(key): (value, lines.get(str(key), 1)) for key, value in document.items()}
