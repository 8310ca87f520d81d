"""The training loop: epochs of batches, one optimizer update per ``--gradient_accumulation_steps`` batches, and
what happens between updates (logging, checkpoints, validation).

The loop syncs with the device only at logging intervals (:class:`RunningLoss`) and before a save
(:class:`~training.divergence.NonFiniteWatch`). Every random draw comes from a seed derived from (seed, process,
epoch, batch), so a resumed run (:class:`~training.resume.Position`) trains on the same batches with the same noise.
Set ``$SRADM_TRAIN_DEBUG_DIR`` to have every process log the dataset indices and a digest of each batch it trains
on (``rank<r>.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from training import losses
from training.checkpoints import save_checkpoint_atomic
from training.divergence import NonFiniteWatch, TrainingDivergedError, divergence_message
from training.loader import batches
from training.resume import Position
from training.safe_io import crash_point
from training.seeds import derive_seed

DEBUG_ENV = "SRADM_TRAIN_DEBUG_DIR"

logger = logging.getLogger("sradm.train")


class RunningLoss:
    """The losses of the steps since the last log, summed on the device: adding one is not a host sync.

    :meth:`mean` reads it (one sync, at logging intervals). Non-finite losses are caught by
    :class:`~training.divergence.NonFiniteWatch`, checked before every save.
    """

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().float()
        self.count += 1

    def mean(self, accelerator) -> torch.Tensor:
        """The mean loss over the interval and all processes, as a 0-d device tensor."""
        local = self.total / max(self.count, 1)
        if accelerator.num_processes > 1:
            return accelerator.reduce(local.reshape(1), reduction="mean")[0]
        return local

    def reset(self) -> None:
        self.total.zero_()
        self.count = 0


def tensor_digest(*tensors: torch.Tensor) -> str:
    """Short sha1 of tensors' bytes (to tell batches apart in debug logs)."""
    sha = hashlib.sha1()
    for tensor in tensors:
        sha.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def debug_writer(process_index: int):
    """The open ``$SRADM_TRAIN_DEBUG_DIR/rank<r>.jsonl`` (appended to), or None when the variable is not set."""
    folder = os.environ.get(DEBUG_ENV)
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    return open(os.path.join(folder, f"rank{process_index}.jsonl"), "a", encoding="utf-8")


@dataclass
class TrainData:
    """The batches a run trains on: ``sampler`` (a :class:`~training.sampler.ShardedEpochSampler`) and
    ``batches_per_epoch`` are None for a stream, ``num_samples`` too."""

    train_set: Any
    loader: torch.utils.data.DataLoader
    sampler: Any = None
    num_samples: int | None = None
    batches_per_epoch: int | None = None


@dataclass
class Trainer:
    """Trains ``model`` (the prepared wrapper of ``inner``) from ``position`` to ``args.max_train_steps``.

    ``frozen_encoder`` conditions the diffusion stage (None for the encoder stage); ``validator`` is a
    :class:`~training.validation.Validator`; ``options`` are the run's :func:`~training.resume.run_options`, saved
    in each checkpoint. :meth:`run` leaves ``position`` at the end of training.
    """

    args: Any
    accelerator: Any
    model: torch.nn.Module
    inner: torch.nn.Module
    frozen_encoder: torch.nn.Module | None
    ema: Any
    optimizer: Any
    lr_scheduler: Any
    data: TrainData
    validator: Any
    position: Position
    options: dict[str, Any] = field(default_factory=dict)

    def run(self) -> None:
        """Train until ``args.max_train_steps``; raises :class:`~training.divergence.TrainingDivergedError` (before
        any save of NaN weights) and ``ValueError`` when a whole epoch has no usable pair."""
        from tqdm.auto import tqdm

        from sradm_diffusers.presets import default_scheduler

        args, accelerator, device = self.args, self.accelerator, self.accelerator.device
        self.total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        self._announce()
        self.noise_scheduler = default_scheduler()
        self.watch = NonFiniteWatch(device)
        self.running_loss, self.steps_since_log = RunningLoss(device), 0
        self.interval_started = time.perf_counter()
        self.gen_device = device if device.type == "cuda" else torch.device("cpu")
        self.debug = debug_writer(accelerator.process_index)
        self.progress = tqdm(total=args.max_train_steps, initial=self.position.global_step, desc="steps",
                             disable=not accelerator.is_local_main_process)
        self.model.train()
        done = self.position.global_step >= args.max_train_steps
        while not done:
            done = self._epoch()
            if not done:
                self.position.epoch, self.position.batch_in_epoch = self.position.epoch + 1, 0
        self.check_finite()
        self.progress.close()
        if self.debug is not None:
            self.debug.close()

    def _announce(self) -> None:
        args, world = self.args, self.accelerator.num_processes
        logger.info(
            "***** %s stage: preset %s, %dx, %s training images, %d steps, batch %d (%d per process x %d processes x "
            "%d accumulation), resolution %d *****", args.stage, args.preset, args.scale,
            self.data.num_samples or "streamed", args.max_train_steps, self.total_batch, args.train_batch_size, world,
            args.gradient_accumulation_steps, args.resolution,
        )

    def _epoch(self) -> bool:
        """Train on the rest of the current epoch; True when ``max_train_steps`` was reached in it."""
        data, position = self.data, self.position
        if data.sampler is not None:
            data.sampler.set_position(position.epoch, position.batch_in_epoch)
        data.train_set.set_epoch(position.epoch)
        iterator = batches(data.loader, position.batch_in_epoch, data.sampler is None)
        epoch_start_batch, steps_in_epoch = position.batch_in_epoch, 0
        while True:
            batch = self._next_batch(iterator)
            if batch is None:
                break
            position.skipped += batch["num_skipped"]
            if not self._any_pairs(batch):
                position.batch_in_epoch += 1  # every image of the global batch was skipped: not a step, no update
                continue
            steps_in_epoch += 1
            if self._train_on(batch) and self._after_update():
                return True
        if steps_in_epoch == 0 and epoch_start_batch == 0:
            self._no_pairs_error()
        return False

    def _next_batch(self, iterator) -> dict | None:
        """The next batch, or None at the end of the epoch (for a stream: when any process has run dry)."""
        batch = next(iterator, None)
        world = self.accelerator.num_processes
        if self.data.sampler is None and world > 1:  # streams may split unevenly: stop when any process is dry
            have = torch.tensor([0.0 if batch is None else 1.0], device=self.accelerator.device)
            if self.accelerator.reduce(have, reduction="sum").item() < world:
                return None
        return batch

    def _any_pairs(self, batch: dict) -> bool:
        """Whether any process's share of this global batch has a pair (a step for all of them, then)."""
        if self.accelerator.num_processes > 1:
            has_pairs = torch.tensor([0.0 if batch["hr"] is None else 1.0], device=self.accelerator.device)
            return self.accelerator.reduce(has_pairs, reduction="sum").item() > 0
        return batch["hr"] is not None

    def _device_batch(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(lr, hr, loss weight) on the device; an all-zero dummy of weight 0 when only this process's images were
        skipped, so that DDP's collective calls stay in step."""
        args, device = self.args, self.accelerator.device
        if batch["hr"] is None:
            lr = torch.zeros(1, 3, args.resolution // args.scale, args.resolution // args.scale, device=device)
            return lr, torch.zeros(1, 3, args.resolution, args.resolution, device=device), 0.0
        lr = batch["lr"].to(device, non_blocking=True)
        hr = batch["hr"].to(device, non_blocking=True)
        if args.channels_last:
            lr, hr = lr.contiguous(memory_format=torch.channels_last), hr.contiguous(memory_format=torch.channels_last)
        self.position.seen += hr.shape[0]
        return lr, hr, 1.0

    def _train_on(self, batch: dict) -> bool:
        """Forward/backward one batch (an optimizer update at the end of an accumulation); True when it updated."""
        args, accelerator, position = self.args, self.accelerator, self.position
        lr, hr, weight = self._device_batch(batch)
        if self.debug is not None:
            self.debug.write(json.dumps({
                "rank": accelerator.process_index, "epoch": position.epoch, "batch": position.batch_in_epoch,
                "step": position.global_step, "indices": batch["index"].tolist(), "digest": tensor_digest(hr),
            }) + "\n")
            self.debug.flush()
        generator = torch.Generator(device=self.gen_device).manual_seed(
            derive_seed(args.seed, "noise", accelerator.process_index, position.epoch, position.batch_in_epoch)
        )
        position.batch_in_epoch += 1
        with accelerator.accumulate(self.model):
            loss = self._loss(lr, hr, generator) * weight
            self.watch.observe(loss, position.global_step + 1)
            self.running_loss.add(loss)
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return accelerator.sync_gradients

    def _loss(self, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The stage's loss of one batch (looked up in :mod:`training.losses` at each call)."""
        args = self.args
        if args.stage == "encoder":
            return losses.encoder_loss(self.model, lr, hr)
        with self.accelerator.autocast():
            return losses.diffusion_loss(self.model, self.frozen_encoder, self.noise_scheduler, lr, hr, generator,
                                         args.residual_scale, args.loss)

    def _after_update(self) -> bool:
        """EMA, counters, logging, checkpoint and validation after an optimizer update; True when training is done."""
        args, position = self.args, self.position
        if self.ema is not None:
            self.ema.step(self.inner.parameters())
        position.global_step += 1
        self.steps_since_log += 1
        self.progress.update(1)
        done = position.global_step >= args.max_train_steps
        if position.global_step % args.logging_steps == 0 or done:
            self._log()
        crash_point(f"step-{position.global_step}")
        if position.global_step % args.checkpointing_steps == 0:
            self.check_finite()
            path = save_checkpoint_atomic(self.accelerator, args.output_dir, position.global_step,
                                          args.checkpoints_total_limit,
                                          extra_state=position.state(args.seed, self.options))
            logger.info("Saved %s", path)
        validate = args.validation_steps and position.global_step % args.validation_steps == 0
        if validate and self.accelerator.is_main_process:
            self.validator.validate(position.global_step)
        return done

    def _log(self) -> None:
        """Log the interval's mean loss (the loop's only host sync), learning rate and samples/s."""
        mean_loss = self.running_loss.mean(self.accelerator).item()
        self.running_loss.reset()
        elapsed = time.perf_counter() - self.interval_started
        self.interval_started = time.perf_counter()
        logs = {"train/loss": mean_loss, "train/lr": self.lr_scheduler.get_last_lr()[0],
                "train/samples_per_sec": self.total_batch * self.steps_since_log / max(elapsed, 1e-9)}
        self.steps_since_log = 0
        self.accelerator.log(logs, step=self.position.global_step)
        self.progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{logs['train/lr']:.2e}",
                                  samples_s=f"{logs['train/samples_per_sec']:.1f}")

    def check_finite(self) -> None:
        """Before every save (all processes): raise :class:`~training.divergence.TrainingDivergedError` if the
        loss or the weights became NaN or infinite, so that a NaN model is never written."""
        problem = self.watch.problem(self.inner.parameters(), self.accelerator)
        if problem is not None:
            self.progress.close()
            raise TrainingDivergedError(
                divergence_message(problem, self.position.global_step, self.args.output_dir, self.args.learning_rate)
            )

    def _no_pairs_error(self) -> None:
        """A whole epoch gave no pair: nothing can be trained."""
        args, data = self.args, self.data
        self.progress.close()
        # An epoch repeats a data set smaller than one global batch to fill it: count images, not visits.
        world = self.accelerator.num_processes
        visits = data.batches_per_epoch * args.train_batch_size * world if data.sampler is not None else None
        skipped = self.position.skipped if visits is None else min(data.num_samples, visits)
        raise ValueError(
            f"No training pair in a whole epoch: {skipped} image(s) were skipped (unreadable, or smaller "
            f"than --resolution {args.resolution} px) and none was usable. Nothing was trained or saved; check "
            "--train_data_dir / --dataset_name and --resolution."
        )
