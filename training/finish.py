"""The end of a run: the counts of all processes, a last validation, the final model with its card, the upload.

The model folder (an ``RRDBEncoder`` for stage ``encoder``, a complete ``SRADMPipeline`` for stage ``diffusion``,
with the EMA weights when there are any) is written beside the old one and swapped in
(:func:`~training.atomic_export.export_atomic`), with ``README.md`` (:mod:`training.model_card`) and
``train_summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch

from training import model_card
from training.atomic_export import export_atomic
from training.ema import ema_weights

logger = logging.getLogger("sradm.train")


def finish_run(args, accelerator, inner, frozen_encoder, ema, validator, position) -> dict[str, Any]:
    """Export (and with ``--push_to_hub`` upload) the trained model on the main process; all processes wait for it.

    Returns:
        The summary written to ``train_summary.json``: stage, global_step, skipped_images and trained_pairs (summed
        over processes), num_processes; on the main process also the last validation ``metrics`` and ``repo_id``.
    """
    accelerator.wait_for_everyone()
    counts = accelerator.reduce(
        torch.tensor([float(position.skipped), float(position.seen)], device=accelerator.device), "sum"
    )
    skipped_total, seen_total = int(counts[0].item()), int(counts[1].item())
    logger.info("Skipped %d image(s) that could not become training pairs (unreadable or smaller than %d px); "
                "trained on %d pairs.", skipped_total, args.resolution, seen_total)
    summary: dict[str, Any] = {"stage": args.stage, "global_step": position.global_step,
                               "skipped_images": skipped_total, "trained_pairs": seen_total,
                               "num_processes": accelerator.num_processes}
    if accelerator.is_main_process:
        if validator.pairs:
            validator.validate_final(position.global_step)
        with ema_weights(ema, inner):
            summary["metrics"] = validator.metrics
            _export(args, inner, frozen_encoder, summary, validator, accelerator.num_processes)
        if args.push_to_hub:
            repo_id = model_card.push_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token,
                                             private=args.hub_private_repo or None)
            logger.info("Uploaded %s to https://huggingface.co/%s", args.output_dir, repo_id)
            summary["repo_id"] = repo_id
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _export(args, inner, frozen_encoder, summary: dict[str, Any], validator, num_processes: int) -> None:
    """Write the model folder, its card and ``train_summary.json`` into ``args.output_dir`` atomically."""
    from sradm_diffusers import SRADMPipeline
    from sradm_diffusers.presets import default_scheduler

    num_parameters = sum(p.numel() for p in inner.parameters())
    if args.stage != "encoder":
        num_parameters += sum(p.numel() for p in frozen_encoder.parameters())
    values = model_card.card_values(
        args, stage=args.stage, global_step=summary["global_step"], num_parameters=num_parameters,
        num_processes=num_processes, metrics=validator.metrics or None, validation=validator.info or None,
    )
    template = model_card.load_template(args.model_card_template)

    def write_export(folder: str) -> None:
        if args.stage == "encoder":
            inner.save_pretrained(folder)
        else:
            SRADMPipeline(
                unet=inner, lr_encoder=frozen_encoder, scheduler=default_scheduler(), upscale_factor=args.scale,
                residual_scale=args.residual_scale,
            ).save_pretrained(folder)
        model_card.write_model_card(folder, values, template)
        with open(os.path.join(folder, "train_summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)

    # Written beside the old model and swapped in: a crash leaves the old or the new model, never half of one.
    export_atomic(args.output_dir, write_export)
