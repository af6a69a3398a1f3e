"""The effective settings of a search, saved as ``run.yaml``.

Every setting is declared once, below, with its flag, help text, rule (:mod:`.options`), the mode it belongs
to and whether a study keeps it. The dataclass applies the rules whatever the values' source;
:func:`~autocompress.settings.load_settings` adds where a bad value came from (the flag, or the preset's file and
line) to the one-line error. Names that a registry holds are checked by
:func:`autocompress.strategies.check_settings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autocompress.files import write_text
from autocompress.settings._vocabulary import (
    MAX_BITS,
    MIN_BITS,
    PRECISIONS,
    SPACES,
    TRIAL_SCORES,
    bounds_problem,
    distillation_problem,
    kl_scored,
)
from autocompress.settings.options import (
    SettingError,
    apply_readers,
    choice,
    default_of,
    duration,
    existing_file,
    folder,
    front_range,
    integer,
    number,
    option,
    options_of,
    plain_name,
    registered,
    sizes,
    switch,
    text,
)
from autocompress.settings.options import size as size_reader

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"


@dataclass
class SearchSettings:
    """Everything a search depends on; units in the names (bytes, epochs, seconds).

    The defaults are the recipe that won its A/B (``docs/experiments/``): the KL score ranks CMA-ES's
    plans in the coefficient space, the best gets a short fine-tune, then a distilled final fine-tune under
    ``clipq_full`` with 1-8 bits. ``scope`` says which mode (or trial score) reads a setting: a value other
    than the default given to a search of another mode is refused, naming the mode it belongs to."""

    # ---- every search
    target_bytes: int = option(help="byte budget of the packed file: 50KB, 1MB, 512KiB, 50000", read=size_reader(),
                               flag="--target-size", metavar="SIZE", kept=True)
    model: str = option("resnet18", help="registered model (resnet18, resnet20, ...) or package.module:factory",
                        read=text(), flag="--model", kept=True)
    checkpoint: str | None = option(None, help="trained weights of the model; without them a baseline is trained first "
                                               "(slow on a CPU)", read=existing_file("the model's weights"), flag="--checkpoint")
    dataset: str = option("cifar10", help="data set", read=registered("datasets"), flag="--dataset", expert=True, kept=True)
    data_dir: str = option("data", help="folder holding cifar-10-batches-py (downloaded there when online)",
                           read=folder(), flag="--data-dir")
    mode: str = option("bo", help="how the plan is chosen (docs/modes.md)", read=registered("modes"),
                       flag="--mode")
    time_budget_seconds: float | None = option(None, help="the whole job (search and final fine-tune) in this long: "
                                                          "15m, 1h, 900: the trials take up to 25 % of it, the "
                                                          "front's trials up to 35 %, the final fine-tune the rest "
                                                          "(its schedule sized to the time left)", read=duration(), flag="--time",
                                               metavar="DURATION", scope="bo")
    storage: str | None = option(None, help="Optuna storage (default sqlite:///OUTPUT_ROOT/STUDY/study.db): any SQLAlchemy "
                                            "URL, e.g. postgresql://user:password@host/db for workers on many machines, "
                                            "or journal:path/study.log", read=text(), flag="--storage", metavar="URL")
    study_name: str | None = option(None, help="study and folder name (default MODEL-TARGETB[-MODE]); the same name "
                                               "resumes the study, and processes with the same storage and name share it",
                                    read=plain_name(), flag="--study-name", metavar="NAME")
    output_root: str = option("studies", help="folder of study folders", read=folder(), flag="--output-root")
    final_epochs: float = option(3.0, help="fine-tuning of the chosen plan at the end (without --time)",
                                 read=number(minimum=0), flag="--final-epochs")
    distill: bool = option(True, help="the final fine-tune learns from the uncompressed model's soft outputs too "
                                      "(knowledge distillation); --no-distill: from the labels only",
                           read=switch(), flag="--no-distill", const=False)
    lr: float = option(0.01, help="fine-tuning learning rate (cosine to 0)", read=number(above=0), flag="--lr", kept=True)
    batch_size: int = option(128, help="images per training step", read=integer(minimum=1), flag="--batch-size", kept=True)
    device: str = option("auto", help="auto | cpu | cuda | cuda:N", read=text(DEVICE_PATTERN, "auto, cpu, cuda or cuda:N"),
                         flag="--device")
    precision: str = option("auto", help="number format of training steps: auto (bf16 on CUDA and on a CPU with "
                                         "AVX512-BF16 or AMX; fp32 elsewhere), fp32, or bf16",
                            read=choice(lambda: PRECISIONS), flag="--precision")
    seed: int = option(0, help="seed of training and sampling", read=integer(minimum=0), flag="--seed", kept=True)
    sparsity_max: float = option(0.95, help="most sparsity of a layer", read=number(minimum=0, below=1),
                                 flag="--max-sparsity", kept=True)
    bits_min: int = option(1, help="fewest bits of a layer's codes", read=integer(MIN_BITS, MAX_BITS), flag="--min-bits",
                           kept=True)
    bits_max: int = option(8, help="most bits of a layer's codes", read=integer(MIN_BITS, MAX_BITS), flag="--max-bits",
                           kept=True)
    quantizers: list[str] = option(help="comma-separated quantizers; several are searched per layer",
                                   read=registered("quantizers", many=True), flag="--quantizers",
                                   default_factory=lambda: ["clipq_full"], kept=True)
    val_size: int = option(5000, help="validation images carved from the training set (they choose; test only reports)",
                           read=integer(minimum=1), flag="--val-size", expert=True, kept=True)
    split_seed: int = option(0, help="seed of the stratified train/val split", read=integer(minimum=0), flag="--split-seed",
                             expert=True, kept=True)
    sparsity_min: float = option(0.0, help="least sparsity of a layer (share of its weights pruned)",
                                 read=number(minimum=0, below=1), flag="--min-sparsity", expert=True, kept=True)
    distill_temperature: float = option(4.0, help="softmax temperature of the distillation", read=number(above=0),
                                        flag="--distill-temperature", expert=True)
    distill_weight: float = option(0.9, help="share of the teacher term in the distillation loss", read=number(0, 1),
                                   flag="--distill-weight", expert=True)
    baseline_epochs: float = option(30.0, help="training of a baseline when no checkpoint is given", read=number(above=0),
                                    flag="--baseline-epochs", expert=True)
    # ---- the BO study (modes bo and random)
    sampler: str = option("cmaes", help="Optuna sampler of the study", read=registered("samplers"), flag="--sampler",
                          scope="bo")
    trials: int = option(60, help="finished trials of the study in all (a resumed study counts its own)",
                         read=integer(minimum=1), flag="--trials", scope="bo")
    space: str = option("coefficients", help="what the sampler searches: per-group coefficients that the projection turns "
                                             "into a plan on the exact budget, absolute per-layer values, or shifts "
                                             "around the projection plan", read=choice(lambda: SPACES), flag="--space",
                        scope="bo", kept=True)
    trial_score: str = option("kl", help="what each trial is scored by: the KL to the baseline in seconds (the best "
                                         "plans then get a short fine-tune), or validation accuracy after a short "
                                         "fine-tune per trial", read=choice(lambda: tuple(TRIAL_SCORES)),
                              flag="--trial-score", scope="bo", kept=True)
    epochs_per_trial: float = option(0.1, help="the short fine-tune of a trial (val_accuracy) or of a short-listed plan "
                                               "(kl), in epochs", read=number(minimum=0), flag="--epochs-per-trial",
                                     scope="bo", kept=True)
    front: str | list[int] = option("auto", help="after the search, sample the budget too over LOW:HIGH (e.g. "
                                                 "25KB:200KB) and write the accuracy/size front (front.png); auto: "
                                                 "half to four times the target; off: no front",
                                    read=front_range(), flag="--front", scope="bo")
    n_jobs: int = option(1, help="worker processes on this machine (one per GPU where there are several)",
                         read=integer(minimum=1), flag="--n-jobs", scope="bo")
    worker: bool = option(False, help="join the study as a worker: run trials only, and leave the final fine-tune and "
                                      "files to the process started without --worker", read=switch(), flag="--worker",
                          const=True, scope="bo")
    timeout_seconds: float | None = option(None, help="stop starting trials after this long: 7200, 2h, 90m",
                                           read=duration(), flag="--timeout", metavar="DURATION", scope="bo", expert=True)
    sampler_startup_trials: int = option(10, help="random trials before a model-based sampler takes over",
                                         read=integer(minimum=0), flag="--startup-trials", scope="bo", expert=True)
    warm_start: bool = option(True, help="start the study from the uniform, projection and sensitivity plans",
                              read=switch(), flag="--no-warm-start", const=False, scope="bo", expert=True)
    heartbeat_seconds: int = option(30, help="seconds between a running trial's heartbeats; a trial silent for three is "
                                             "taken as its worker's death, marked failed and re-queued",
                                    read=integer(minimum=1), flag="--heartbeat", scope="bo", expert=True)
    max_retries: int = option(2, help="times a dead worker's trial is re-queued", read=integer(minimum=0),
                              flag="--max-retries", scope="bo", expert=True)
    coefficient_range: float = option(4.0, help="coefficients space: each coefficient lies in [1/R, R]",
                                      read=number(above=1), flag="--coefficient-range", scope="bo", expert=True, kept=True)
    pruner: str = option("median", help="Optuna pruner: stops weak trials early", read=registered("pruners"),
                         flag="--pruner", scope="val_accuracy", expert=True)
    score_images: int = option(1024, help="training images the KL is averaged over", read=integer(minimum=16),
                               flag="--score-images", scope="kl", expert=True, kept=True)
    score_bn_images: int = option(512, help="augmented training images behind the re-estimated BN statistics",
                                  read=integer(minimum=1), flag="--score-bn-images", scope="kl", expert=True, kept=True)
    finetune_top: int = option(1, help="how many of the best-scored plans get the short fine-tune (--epochs-per-trial); "
                                       "the best of them gets the final one", read=integer(minimum=1),
                               flag="--finetune-top", scope="kl", expert=True)
    front_trials: int = option(40, help="trials that sample coefficients and the budget", read=integer(minimum=1),
                               flag="--front-trials", scope="kl", expert=True)
    front_finetunes: int = option(2, help="points of the front given the short fine-tune", read=integer(minimum=0),
                                  flag="--front-finetunes", scope="kl", expert=True)
    # ---- mode admm
    targets: list[int] | None = option(None, help="a sweep of targets, e.g. 200KB,100KB,50KB (one run each)",
                                       read=sizes(), flag="--targets", metavar="SIZES", scope="admm", kept=True)
    admm_epochs: float = option(2.0, help="epochs of ADMM training before the plan is made hard",
                                read=number(above=0), flag="--admm-epochs", scope="admm")
    projections_per_epoch: int = option(4, help="projections onto the size budget (Z-steps) per epoch",
                                        read=integer(minimum=1), flag="--projections-per-epoch", scope="admm", expert=True)
    rho_start: float = option(0.01, help="penalty weight at the start (grows geometrically)", read=number(above=0),
                              flag="--rho-start", scope="admm", expert=True)
    rho_end: float = option(1.0, help="penalty weight at the last projection", read=number(above=0),
                            flag="--rho-end", scope="admm", expert=True)
    # ---- mode bayesbits
    gate_epochs: float = option(1.0, help="epochs of training the weights and the gates together before "
                                          "the plan is made hard", read=number(above=0), flag="--gate-epochs",
                                scope="bayesbits")
    gate_groups: str = option("kernel", help="what one pruning gate of a convolution shuts: an output "
                                             "channel, or a kernel (one output x input channel pair)",
                              read=choice(lambda: ("channel", "kernel")), flag="--gate-groups", scope="bayesbits",
                              expert=True)
    gate_masks: str = option("magnitude", help="which weights the hard plan keeps: in each layer the largest, "
                                              "as many as its gates kept (magnitude), or exactly the groups its gates kept",
                             read=choice(lambda: ("magnitude", "gates")), flag="--gate-masks", scope="bayesbits",
                             expert=True)
    gate_lr: float = option(0.3, help="Adam learning rate of the gates' log-alpha", read=number(above=0),
                            flag="--gate-lr", scope="bayesbits", expert=True)
    def __post_init__(self) -> None:
        apply_readers(self)
        for fields, problem in _cross_problems(self):
            if problem:
                raise SettingError(fields, problem)

    @property
    def resolved_front(self) -> list[int] | None:
        """The budget range of the front, or None where there is none (off, or a search that is not kl-scored
        in the coefficient space); ``auto`` is half to four times the target."""
        if self.front == "off" or not (self.space == "coefficients" and kl_scored(self.trial_score)):
            return None
        if isinstance(self.front, str):  # auto
            return [max(self.target_bytes // 2, 1), self.target_bytes * 4]
        return list(self.front)

    @property
    def resolved_targets(self) -> list[int]:
        """The targets of this run, largest first (one unless an ADMM sweep)."""
        return sorted(set(self.targets), reverse=True) if self.targets else [self.target_bytes]

    @property
    def resolved_study_name(self) -> str:
        """``study_name``, else ``MODEL-TARGETB`` for the default mode (bo) and ``MODEL-TARGET(S)B-MODE`` for the others."""
        if self.study_name:
            return self.study_name
        model = self.model.replace(":", "_").replace(".", "_").replace("/", "_")
        sweep = "-".join(f"{target}B" for target in self.resolved_targets)
        return f"{model}-{sweep}" if self.mode == default_of(SearchSettings, "mode") else f"{model}-{sweep}-{self.mode}"

    @property
    def study_dir(self) -> Path:
        return Path(self.output_root) / self.resolved_study_name

    @property
    def resolved_storage(self) -> str:
        return self.storage or f"sqlite:///{self.study_dir / 'study.db'}"

    @property
    def num_classes(self) -> int:
        return 100 if self.dataset == "cifar100" else 10

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _cross_problems(settings: SearchSettings) -> list[tuple[tuple[str, ...], str | None]]:
    """The rules that tie several settings together: (the fields, what is wrong or None). The rules that need a
    registry (a mode's own rules and scopes, the names) are :func:`autocompress.strategies.check_settings`'s."""
    return [
        (("sparsity_min", "sparsity_max", "bits_min", "bits_max"),
         bounds_problem(settings.sparsity_min, settings.sparsity_max, settings.bits_min, settings.bits_max)),
        (("distill_temperature", "distill_weight"), distillation_problem(settings.distill_temperature, settings.distill_weight)),
        (("rho_start", "rho_end"), None if settings.rho_start <= settings.rho_end else
         f"rho_start ({settings.rho_start:g}) must not exceed rho_end ({settings.rho_end:g}): the ADMM penalty only grows"),
        (("front", "space", "trial_score"),
         None if settings.front in ("auto", "off") or (settings.space == "coefficients" and kl_scored(settings.trial_score))
         else "front (the budget sampled over a range) needs space coefficients and trial_score kl, where a trial takes "
              "seconds"),
    ]


# When a setting's scope applies: (what it belongs to, for the message; the test on the mode's scopes and the settings).
SCOPES: dict[str, tuple[str, Callable[[tuple[str, ...], dict[str, Any]], bool]]] = {
    "bo": ("mode bo (or random)", lambda scopes, values: "bo" in scopes),
    "kl": ("mode bo with trial_score kl", lambda scopes, values: "bo" in scopes and kl_scored(values["trial_score"])),
    "val_accuracy": ("mode bo with trial_score val_accuracy",
                     lambda scopes, values: "bo" in scopes and not kl_scored(values["trial_score"])),
    "admm": ("mode admm", lambda scopes, values: "admm" in scopes),
    "bayesbits": ("mode bayesbits", lambda scopes, values: "bayesbits" in scopes),
}


SETTING_OPTIONS = options_of(SearchSettings)
