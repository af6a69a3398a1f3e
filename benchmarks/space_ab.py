"""Does searching around the best uniform plan find better plans than searching absolute values?

Two studies of the ResNet-20 50 KB search (``studies/resnet20-50KB.yaml``: real
CIFAR-10, TPE, median pruner, 0.25 epochs per trial, warm-started) that differ only
in the search space:

* ``absolute``: each layer's sparsity in [0, 0.95] and bits in 2..6;
* ``relative``: each layer's sparsity within +-0.2 and bits within +-1 of the best
  uniform plan (the first warm start), clamped to the same bounds.

Both arms run interleaved in one process, one trial at a time, the arm that has
used less wall time going next, with the same wall-clock budget. The table gives
each arm's trials, best feasible validation accuracy, and the best accuracy among
the sampler's own trials (warm starts left out: they are the same in both arms).

    python benchmarks/space_ab.py                 # 15 minutes per arm
    python benchmarks/space_ab.py --quick         # 3 minutes per arm, 0.05-epoch trials
"""

from __future__ import annotations

import sys

from multi_fidelity import arm_arguments, compare_arms, finish_arm_arguments


def main(argv: list[str] | None = None) -> int:
    parser = arm_arguments(__doc__.split("\n\n")[0], default_minutes=15)
    args = parser.parse_args(argv)
    budget_seconds = finish_arm_arguments(args)
    arms = {"space-absolute": {"space": "absolute"}, "space-relative": {"space": "relative"}}
    absolute, relative = compare_arms("space_ab", "TPE + median pruner, absolute vs relative space", arms, args, budget_seconds)
    print(
        f"\nRESULT: best feasible val {relative.best:.4f} (relative) vs {absolute.best:.4f} (absolute); "
        f"best sampler-made trial {relative.best_guided:.4f} vs {absolute.best_guided:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
