"""The optimizer (Adam, fused where the device has it) and its learning-rate schedule."""

from __future__ import annotations

import torch


def build_lr_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    decay_steps: int | None = None,
    decay_factor: float = 0.5,
    step_rules: str | None = None,
    num_processes: int = 1,
):
    """A ``LambdaLR`` for optimizer steps.

    ``name`` is "step" (linear warm-up, then the learning rate times ``decay_factor`` every ``decay_steps``
    optimizer steps, as the SRDiff reference) or any name of ``diffusers.optimization.get_scheduler``. Step counts
    are multiplied by ``num_processes`` because accelerate's prepared scheduler advances once per process for each
    optimizer step (the convention of diffusers' training examples).
    """
    from diffusers.optimization import get_scheduler

    if name == "step":
        if not decay_steps or decay_steps < 1:
            raise ValueError(f"--lr_scheduler step needs --lr_decay_steps >= 1, got {decay_steps!r}.")
        warm, every = warmup_steps * num_processes, decay_steps * num_processes

        def factor(step: int) -> float:
            ramp = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
            return ramp * decay_factor ** (step // every)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return get_scheduler(
        name,
        optimizer,
        step_rules=step_rules,
        num_warmup_steps=warmup_steps * num_processes,
        num_training_steps=total_steps * num_processes,
    )


def make_optimizer(params, args, device) -> torch.optim.Optimizer:
    """Adam (the reference's optimizer) with torch's fused kernel where it exists for ``device`` (CUDA; CPU in
    torch >= 2.4), else the multi-tensor (foreach) one; the update rule is the same."""
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # fused not implemented for this device / torch
        return torch.optim.Adam(params, foreach=True, **kwargs)
