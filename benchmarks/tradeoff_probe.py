"""Does the projection trade pruning against quantization well? A probe of one direction the coefficient space lacks.

The coefficient space (``--space coefficients``) scales each layer's distortion ``||V - Q(V)||^2`` by a
coefficient, which moves bytes between layers. Inside a layer, the split between pruned weights and quantization
error is always weighed 1:1. This probe weighs the quantization part by ``alpha`` in every layer (the bits
knapsack then minimises ``pruned energy + alpha * quantization error``; ``alpha`` < 1 favours more weights at fewer
bits, > 1 fewer weights at more bits), projects the baseline onto the target with all coefficients at 1, and
prints each plan's exact bytes, kept share, mean bits and cheap KL score (the search's trial score, lower is
better). ``alpha`` = 1 is the projection warm start itself.

It patches the projection's private distortion table for the run, so it measures the idea without adding it to the
product. No training: about a minute on 2 CPU cores for ResNet-20.

    python benchmarks/tradeoff_probe.py --config studies/resnet20-50KB.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import REPO, machine_line

import autocompress.search._projection as projection
from autocompress.compress import layer_weight_counts
from autocompress.search import load_settings
from autocompress.search._context import prepare_context
from autocompress.search._score import PlanScorer

ALPHAS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)


def weighted_distortions(original, alpha: float):  # type: ignore[no-untyped-def]
    """``original``'s distortion table with each quantization error (the part above the pruned energy) times alpha."""

    def table(layers, counts, choices, quantizer):  # type: ignore[no-untyped-def]
        plain = original(layers, counts, choices, quantizer)
        out = {}
        for name, errors in plain.items():
            pruned = layers.weight[name] * layers.dropped_energy(name, counts[name])
            out[name] = [pruned + alpha * (error - pruned) for error in errors]
        return out

    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "studies" / "resnet20-50KB.yaml")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    settings = load_settings(args.config, {"data_dir": str(args.data_dir), "output_root": "/tmp/tradeoff_probe",
                                           "study_name": "probe"})
    context = prepare_context(settings, log=lambda _: None)
    scorer = PlanScorer(context.baseline, context.splits.train, device=context.device)
    projector = projection.Projector(context.sizes, context.space)
    counts = layer_weight_counts(context.baseline)
    original = projection._distortions
    print(machine_line("tradeoff_probe.py", f"{args.config.name}, target {settings.target_bytes:,} B"))
    print(f"{'alpha':>6}  {'bytes':>7}  kept   mean bits  KL      agreement")
    try:
        for alpha in ALPHAS:
            projection._distortions = weighted_distortions(original, alpha)
            found = projector.project(settings.target_bytes)
            assert found is not None
            layers = found.plan.layers
            kept = {name: (1 - setting.sparsity) * counts[name] for name, setting in layers.items()}
            mean_bits = sum(layers[name].bits * kept[name] for name in layers) / sum(kept.values())
            score = scorer.score_plan(found.plan)
            print(f"{alpha:6.3f}  {found.packed_bytes:7,}  {sum(kept.values()) / sum(counts[n] for n in layers):.3f}  "
                  f"{mean_bits:9.2f}  {score.kl:.4f}  {score.agreement:.3f}", flush=True)
    finally:
        projection._distortions = original


if __name__ == "__main__":
    main()
