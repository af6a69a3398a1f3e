"""Was the second fidelity level's choice the right one? Give every short-fine-tuned candidate of a KL search
the same final fine-tune that the chosen one got, and compare.

A KL-scored search fine-tunes its ``finetune_top`` best plans for a fraction of an epoch, then gives the one
with the lowest KL after that fine-tune the final fine-tune. This script reads a finished search's storage
(read only), takes those candidates, and gives each of them the study's own final fine-tune (the same epochs,
lr, batch, seed and distillation, from the study's ``run.yaml``). It prints, per candidate, the scores the
search saw and the validation and test accuracy after the final fine-tune; the test split only reports.

Results are kept per candidate in ``<out>/candidates.json`` (a rerun skips finished candidates); the
chosen candidate's figures are taken from the study's ``best.yaml`` rather than trained again.

    python benchmarks/candidates_final.py --study-dir studies/search_ab20/resnet20-50KB-search-s2 \\
        --out benchmarks/results/candidates-resnet20-50KB-s2
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import optuna
import yaml
from _common import machine_line

from autocompress.errors import AutocompressError
from autocompress.search import (
    FINETUNE_SUFFIX,
    TrialRecord,
    finetune_plan,
    load_settings,
    measure_within_budget,
    open_storage,
    prepare_context,
)


def candidates_of(study_dir: Path, study_name: str) -> list[dict]:
    """The short-fine-tuned candidates of the search, in the order the search ranked them after that fine-tune."""
    storage = open_storage(f"sqlite:///{study_dir / 'study.db'}", heartbeat_seconds=None)
    scored = optuna.load_study(study_name=study_name, storage=storage)
    try:
        companion = optuna.load_study(study_name=study_name + FINETUNE_SUFFIX, storage=storage)
    except KeyError:
        raise AutocompressError(f"{study_dir} has no short fine-tunes; this needs a search run with "
                                "--trial-score kl and --finetune-top") from None
    scored_trials = scored.get_trials(deepcopy=False)
    rows = []
    for trial in companion.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        record = TrialRecord.of(trial)
        if record.fidelity != "finetune":
            continue
        parent = scored_trials[record.parent or 0]
        rows.append({"trial": record.parent, "maker": TrialRecord.of(parent).strategy, "search_kl": parent.value,
                     "finetune_kl": trial.value, "finetune_val": record.val_accuracy, "plan": record.plan})
    return sorted(rows, key=lambda row: row["finetune_kl"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study-dir", type=Path, required=True, help="a finished KL search's folder (study.db, run.yaml, best.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="folder for candidates.json and the fine-tunes' run.yaml")
    parser.add_argument("--trials", type=lambda text: [int(n) for n in text.split(",")], default=None,
                        help="only these candidates (trial numbers of the scored study, comma-separated); default all")
    parser.add_argument("--final-epochs", type=float, default=None, help="override the study's final epochs (a quick check)")
    args = parser.parse_args()
    missing = [name for name in ("run.yaml", "study.db", "best.yaml") if not (args.study_dir / name).is_file()]
    if missing:
        print(f"error: {args.study_dir} lacks {', '.join(missing)}; pass the folder of a finished search", file=sys.stderr)
        return 2
    try:
        return run(args)
    except AutocompressError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Fine-tune the requested candidates that are not in ``candidates.json`` yet, then print the table."""
    flags = {"output_root": str(args.out.parent), "study_name": args.out.name}
    if args.final_epochs is not None:
        flags["final_epochs"] = args.final_epochs
    settings = load_settings(args.study_dir / "run.yaml", flags)
    original = yaml.safe_load((args.study_dir / "run.yaml").read_text())
    print(machine_line("candidates_final.py", f"study {args.study_dir}, final fine-tune {settings.final_epochs:g} epoch(s), "
                                               f"distill {settings.distill}, seed {settings.seed}"))
    candidates = candidates_of(args.study_dir, original["study_name"])
    best = yaml.safe_load((args.study_dir / "best.yaml").read_text())
    chosen_trial = best["result"]["trial"]

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "candidates.json"
    try:
        results: dict[str, dict] = json.loads(results_path.read_text()) if results_path.exists() else {}
    except json.JSONDecodeError as error:
        raise AutocompressError(f"{results_path} is not readable JSON ({error}); move it aside to start over") from None
    same_recipe = args.final_epochs is None or args.final_epochs == original["final_epochs"]
    if same_recipe:
        results[str(chosen_trial)] = {"val": best["result"]["accuracy"]["val"], "test": best["result"]["accuracy"]["test"],
                                      "bytes": best["result"]["packed_bytes"], "minutes": None, "source": "best.yaml"}
    context = None
    for candidate in candidates:
        key = str(candidate["trial"])
        if key in results or (args.trials is not None and candidate["trial"] not in args.trials):
            continue
        if context is None:
            context = prepare_context(settings, log=lambda line: print("    " + line, flush=True))
        started = time.perf_counter()
        print(f"    final fine-tune of candidate trial {key} ({settings.final_epochs:g} epochs)", flush=True)
        plan = TrialRecord(plan=candidate["plan"]).plan_for(settings.model)
        model = copy.deepcopy(context.baseline)
        finetune_plan(model, plan, context)
        compressed = measure_within_budget(model, plan, context, measure_test=True)
        results[key] = {"val": compressed.val_accuracy, "test": compressed.test_accuracy, "bytes": compressed.size.total,
                        "minutes": round((time.perf_counter() - started) / 60, 1), "source": "this script"}
        results_path.write_text(json.dumps(results, indent=2))

    print(f"\n{'trial':>5}  {'maker':<8} {'search KL':>9}  {'KL 0.25 ep':>10}  {'val 0.25 ep':>11}  "
          f"{'final val':>9}  {'final test':>10}  {'bytes':>7}  note")
    for candidate in candidates:
        result = results.get(str(candidate["trial"]), {})
        note = "chosen by the search" if candidate["trial"] == chosen_trial else ("" if result else "not fine-tuned here")
        final = (f"{result['val']:>9.2%}  {result['test']:>10.2%}  {result['bytes']:>7,}" if result
                 else f"{'-':>9}  {'-':>10}  {'-':>7}")
        print(f"{candidate['trial']:>5}  {candidate['maker']:<8} {candidate['search_kl']:>9.4f}  {candidate['finetune_kl']:>10.4f}  "
              f"{candidate['finetune_val']:>11.2%}  {final}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
