"""Constrained-optimisation mode (Yang et al. 2020): joint sparsity-quantization learning by ADMM.

The problem is ``min loss(W)`` subject to ``packed_size(compress(W)) <= target``.
ADMM splits it with a copy Z of the weights that must satisfy the constraint:

* **W-step**: SGD on ``loss(W) + rho/2 * ||W - Z + U||^2`` (the penalty's gradient,
  ``rho * (W - Z + U)``, is added to each plan layer's weight gradient by a hook);
* **Z-step**: ``Z = projection(W + U)`` onto the size constraint
  (:func:`~autocompress.search.project_to_budget`), which also chooses
  every layer's sparsity and bits;
* **dual update**: ``U <- U + W - Z``;
* ``rho`` grows geometrically from ``rho_start`` to ``rho_end`` over the
  projections (the scaled dual U is rescaled with it), pulling W onto the
  constraint set.

At the end the last projection of W is made hard: its plan and sparsity
pattern are fixed and the model is fine-tuned with pruned weights held at zero
and the kept ones quantized at the plan's bits in every forward pass. The user
sets only the target (and a training budget); nothing per layer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from autocompress.allocation import Projection, SearchSpace, project_to_budget
from autocompress.compress import compressible_layers, dequantize, full_precision_weight, kept_count, magnitude_mask, quantize
from autocompress.data import TensorSet
from autocompress.engine import train
from autocompress.errors import AutocompressError
from autocompress.pack import SizeAccountant
from autocompress.plan import Plan
from autocompress.settings import SearchSettings


@dataclass(frozen=True)
class AdmmSchedule:
    """How long the ADMM phase trains, how often it projects, and how ``rho`` grows.

    Its values are checked where they are set, as settings (``SearchSettings``: admm_epochs > 0,
    projections_per_epoch >= 1, 0 < rho_start <= rho_end); :meth:`of` builds it from them."""

    epochs: float = 2.0
    projections_per_epoch: int = 4
    rho_start: float = 0.01
    rho_end: float = 1.0
    lr: float = 0.01
    batch_size: int = 128
    precision: str = "auto"

    @classmethod
    def of(cls, settings: SearchSettings) -> AdmmSchedule:
        return cls(epochs=settings.admm_epochs, projections_per_epoch=settings.projections_per_epoch,
                   rho_start=settings.rho_start, rho_end=settings.rho_end, lr=settings.lr, batch_size=settings.batch_size,
                   precision=settings.precision)

    def projections(self) -> int:
        return max(1, round(self.epochs * self.projections_per_epoch))

    def rho_after(self, projection: int) -> float:
        """``rho`` once ``projection`` projections are done (geometric from start to end)."""
        share = min(projection / max(self.projections() - 1, 1), 1.0)
        return self.rho_start * (self.rho_end / self.rho_start) ** share


@dataclass
class AdmmState:
    """Z, the scaled duals U and ``rho`` for the plan layers of ``model``.

    The projection reads the values ``W + U`` from a private copy of the model
    (``shadow``), so the exact size accountant can rank them like any weights.
    """

    model: nn.Module
    space: SearchSpace
    target_bytes: int
    model_spec: str
    rho: float
    weights: dict[str, torch.Tensor] = field(init=False)
    z: dict[str, torch.Tensor] = field(init=False)
    u: dict[str, torch.Tensor] = field(init=False)
    projection: Projection | None = field(init=False, default=None)
    _shadow: nn.Module = field(init=False)
    _sizes: SizeAccountant = field(init=False)
    _hooks: list = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        modules = compressible_layers(self.model)
        self.weights = {name: full_precision_weight(modules[name]) for name in self.space.layers}
        self.u = {name: torch.zeros_like(weight) for name, weight in self.weights.items()}
        self.z = {name: weight.detach().clone() for name, weight in self.weights.items()}
        self._shadow = copy.deepcopy(self.model)
        self._sizes = SizeAccountant(self._shadow, model_spec=self.model_spec)
        self._shadow_weights = {name: full_precision_weight(module) for name, module in compressible_layers(self._shadow).items()}

    def project(self, *, with_duals: bool = True) -> Projection:
        """Z-step: ``Z = projection(W + U)`` (or of W alone); returns the projection (plan and bytes)."""
        with torch.no_grad():
            for name, weight in self.weights.items():
                values = weight.detach() + self.u[name] if with_duals else weight.detach()
                self._shadow_weights[name].copy_(values)
        seed = self.projection.plan if self.projection is not None else None
        projection = project_to_budget(self._sizes, self.space, self.target_bytes, seed=seed)
        if projection is None:
            raise AutocompressError(
                f"no plan of the search space fits {self.target_bytes:,} bytes; raise the target or widen the space"
            )
        with torch.no_grad():
            for name, setting in projection.plan.layers.items():
                values = self._shadow_weights[name].detach()
                self.z[name] = dequantize(quantize(values, setting)).to(values.dtype)
        self.projection = projection
        return projection

    def update_duals(self) -> None:
        """``U <- U + W - Z``."""
        with torch.no_grad():
            for name, weight in self.weights.items():
                self.u[name].add_(weight.detach() - self.z[name])

    def set_rho(self, rho: float) -> None:
        """Change ``rho``; the scaled duals are rescaled so the unscaled ones stay the same."""
        with torch.no_grad():
            for dual in self.u.values():
                dual.mul_(self.rho / rho)
        self.rho = rho

    def residual(self) -> float:
        """``||W - Z|| / ||W||`` over the plan layers: how far the weights are from the constraint set."""
        with torch.no_grad():
            gap = sum(float((weight.detach() - self.z[name]).double().pow(2).sum()) for name, weight in self.weights.items())
            norm = sum(float(weight.detach().double().pow(2).sum()) for weight in self.weights.values())
        return math.sqrt(gap / max(norm, 1e-30))

    def attach_penalty(self) -> None:
        """Add ``rho * (W - Z + U)`` to every plan layer's weight gradient (the W-step's penalty)."""
        self.detach_penalty()
        for name, weight in self.weights.items():
            self._hooks.append(weight.register_hook(self._penalty_hook(name, weight)))

    def detach_penalty(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _penalty_hook(self, name: str, weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def add_penalty(grad: torch.Tensor) -> torch.Tensor:
            return grad + self.rho * (weight.detach() - self.z[name] + self.u[name])

        return add_penalty

    def hard_masks(self) -> dict[str, torch.Tensor]:
        """The sparsity pattern of the last projection, read from the weights it projected."""
        assert self.projection is not None
        return {
            name: magnitude_mask(self._shadow_weights[name].detach(), kept_count(self._shadow_weights[name].numel(), setting.sparsity))
            for name, setting in self.projection.plan.layers.items()
        }


ProjectionCallback = Callable[[int, Projection, AdmmState], None]


def admm_train_(
    model: nn.Module,
    train_set: TensorSet,
    *,
    space: SearchSpace,
    target_bytes: int,
    model_spec: str,
    schedule: AdmmSchedule,
    device: torch.device,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    on_projection: ProjectionCallback | None = None,
) -> tuple[Plan, dict[str, torch.Tensor]]:
    """The ADMM phase, in place on ``model``; returns the hard plan and its fixed sparsity pattern.

    The returned plan is the projection of the trained W itself (U dropped) and
    fits ``target_bytes`` exactly; ``masks`` are the weights it keeps.
    ``on_projection(k, projection, state)`` is called after the k-th Z-step (1-based).
    """
    model.to(device)
    state = AdmmState(model, space, target_bytes, model_spec, rho=schedule.rho_start)
    first = state.project()
    if on_projection is not None:
        on_projection(0, first, state)
    steps_per_epoch = max(len(train_set) // schedule.batch_size, 1)
    total_steps = math.ceil(schedule.epochs * steps_per_epoch)
    every = max(total_steps // schedule.projections(), 1)
    done = 0

    def step_callback(step: int) -> None:
        nonlocal done
        if on_step is not None:
            on_step(step)
        if step % every == 0 and step < total_steps:
            projection = state.project()
            state.update_duals()
            done += 1
            state.set_rho(schedule.rho_after(done))
            if on_projection is not None:
                on_projection(done, projection, state)

    state.attach_penalty()
    try:
        train(model, train_set, device=device, epochs=schedule.epochs, lr=schedule.lr, batch_size=schedule.batch_size,
              seed=seed, on_step=step_callback, precision=schedule.precision)
    finally:
        state.detach_penalty()
    final = state.project(with_duals=False)
    if on_projection is not None:
        on_projection(done + 1, final, state)
    return final.plan, state.hard_masks()
