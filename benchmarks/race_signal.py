"""Can the first epochs of the final fine-tune tell the short-listed candidates apart?

A KL search ends by giving one plan the final fine-tune. ``candidates_final.py`` showed that the plans on
its short list end up to 0.67 points apart on test after 20 distilled epochs, and that neither the KL after
the 0.25-epoch short fine-tune nor the validation accuracy (seen data, saturated) ordered them. This script
measures the signal a race would use: give every candidate the *final* fine-tune's own schedule (same
epochs, lr, batch, seed, distillation, from the study's ``run.yaml``) but stop it after ``--epochs``
epochs, and after each epoch record KL(baseline || candidate) on the whole validation split (the
fine-tune never trains on it, and KL needs no labels, so it does not saturate), the top-1 agreement with
the baseline, and the validation accuracy. The test split is not touched.

Each candidate's training state is kept in ``<out>/finetune-<digest>.state`` (the name the final fine-tune
itself uses), so ``candidates_final.py --out <out>`` carries a candidate on to the full fine-tune from
where this script stopped, with the same weights an unbroken run would have.

    python benchmarks/race_signal.py --study-dir studies/search_ab20/resnet20-50KB-search-s2 \\
        --out benchmarks/results/race-resnet20-50KB-s2 --trials 86,67 --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import yaml
from _common import machine_line
from candidates_final import candidates_of

from autocompress.errors import AutocompressError
from autocompress.pipeline import finetune_under_plan_
from autocompress.search import (
    PlanScorer,
    ScoreSettings,
    TrialRecord,
    final_distillation,
    finetune_state_path,
    load_settings,
    measure_within_budget,
    prepare_context,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study-dir", type=Path, required=True, help="a finished KL search's folder (study.db, run.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="folder for race.json and the candidates' training states")
    parser.add_argument("--trials", type=lambda text: [int(n) for n in text.split(",")], required=True,
                        help="the candidates (trial numbers of the scored study, comma-separated)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the final fine-tune to run and measure")
    args = parser.parse_args()
    if not (args.study_dir / "run.yaml").is_file() or not (args.study_dir / "study.db").is_file():
        print(f"error: {args.study_dir} lacks run.yaml or study.db; pass the folder of a finished search", file=sys.stderr)
        return 2
    try:
        return run(args)
    except AutocompressError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.study_dir / "run.yaml", {"output_root": str(args.out.parent), "study_name": args.out.name})
    original = yaml.safe_load((args.study_dir / "run.yaml").read_text())
    print(machine_line("race_signal.py", f"study {args.study_dir}, {args.epochs} of {settings.final_epochs:g} final epochs, "
                                         f"distill {settings.distill}, seed {settings.seed}"))
    candidates = {row["trial"]: row for row in candidates_of(args.study_dir, original["study_name"])}
    unknown = [trial for trial in args.trials if trial not in candidates]
    if unknown:
        raise AutocompressError(f"trials {unknown} are not short-listed candidates of {args.study_dir} "
                                f"(those are {sorted(candidates)})")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "race.json"
    results: dict[str, dict] = json.loads(results_path.read_text()) if results_path.exists() else {}
    context = prepare_context(settings, log=lambda line: print("    " + line, flush=True))
    val = context.splits.val
    scorer = PlanScorer(context.baseline, val, device=context.device,
                        settings=ScoreSettings(images=len(val), bn_images=1, seed=settings.seed))  # as the race's
    for trial in args.trials:
        result = results.get(str(trial), {})
        if isinstance(result, list):  # the first version kept the per-epoch rows only
            result = {"epochs": result}
        if "race_kl" in result and len(result.get("epochs", [])) >= args.epochs:
            continue
        results[str(trial)] = race_one(context, scorer, candidates[trial], trial, args.epochs, result.get("epochs", []))
        results_path.write_text(json.dumps(results, indent=2))

    print(f"\n{'trial':>5}  {'KL 0.25 ep':>10}  " + "  ".join(f"{'ep ' + str(e) + ' KL':>9}" for e in range(1, args.epochs + 1))
          + f"  {'race KL':>8}  {'race val':>8}")
    for trial in args.trials:
        result = results[str(trial)]
        cells = "  ".join(f"{row['val_kl']:>9.4f}" for row in result["epochs"][: args.epochs])
        print(f"{trial:>5}  {candidates[trial]['finetune_kl']:>10.4f}  {cells}  {result['race_kl']:>8.4f}  {result['race_val']:>8.2%}")
    return 0


def race_one(context, scorer: PlanScorer, candidate: dict, trial: int, epochs: int, rows: list[dict]) -> dict:
    """The first ``epochs`` of the candidate's final fine-tune (resumed from its state where one is kept): the
    in-training validation KL after each epoch, then the race's own measure, KL of the hardened model."""
    settings = context.settings
    plan = TrialRecord(plan=candidate["plan"]).plan_for(settings.model)
    model = copy.deepcopy(context.baseline)
    state = finetune_state_path(model, plan, context)
    started = time.perf_counter()

    def measure(epoch: int, val_accuracy: float | None) -> None:
        score = scorer.score_model(model)  # the fake-quantized weights, the BN statistics of training
        rows.append({"epoch": epoch + 1, "val_kl": score.kl, "agreement": score.agreement, "val": val_accuracy,
                     "minutes": round((time.perf_counter() - started) / 60, 2)})
        print(f"    trial {trial} epoch {epoch + 1}: val KL {score.kl:.4f}, val {val_accuracy:.2%}", flush=True)

    print(f"    trial {trial}: {epochs} of {settings.final_epochs:g} epochs ({state.name})", flush=True)
    finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.final_epochs,
                         lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed, val_set=context.splits.val,
                         progress=False, on_epoch_end=measure, distillation=final_distillation(context),
                         checkpoint_path=state, stop_after_epochs=epochs)
    compressed = measure_within_budget(model, plan, context)
    score = scorer.score_model(compressed.model)
    print(f"    trial {trial} after {epochs} epochs, hardened: val KL {score.kl:.4f}, val {compressed.val_accuracy:.2%}",
          flush=True)
    return {"epochs": rows, "race_kl": score.kl, "race_val": compressed.val_accuracy}


if __name__ == "__main__":
    sys.exit(main())
