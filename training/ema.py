"""``--use_ema``: an exponential moving average of the trained weights, which validation and the saved model use.

:func:`make_ema` creates it (diffusers' ``EMAModel``), :func:`ema_weights` swaps it into the model for a block
(validation, the final export) and back, :func:`load_ema` restores it from a checkpoint's ``ema/`` folder.
"""

from __future__ import annotations

import contextlib
import os
import warnings


def make_ema(inner, args, device):
    """An ``EMAModel`` of ``inner``'s parameters (decay ``--ema_decay``) on ``device``, or None without --use_ema."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    ema = EMAModel(inner.parameters(), decay=args.ema_decay, model_cls=type(inner), model_config=inner.config)
    ema.to(device)
    return ema


@contextlib.contextmanager
def ema_weights(ema, inner):
    """Inside the block ``inner`` holds the EMA weights; its trained weights are put back afterwards. A no-op when
    ``ema`` is None."""
    if ema is None:
        yield
        return
    ema.store(inner.parameters())
    ema.copy_to(inner.parameters())
    try:
        yield
    finally:
        ema.restore(inner.parameters())


def load_ema(ema, checkpoint: str, model_cls, device) -> None:
    """Load ``ema``'s state from ``checkpoint/ema`` (written by ``EMAModel.save_pretrained``)."""
    from diffusers.training_utils import EMAModel

    with warnings.catch_warnings():  # diffusers' own EMAModel.from_pretrained trips its from_config deprecation
        warnings.simplefilter("ignore", FutureWarning)
        loaded = EMAModel.from_pretrained(os.path.join(checkpoint, "ema"), model_cls)
    ema.load_state_dict(loaded.state_dict())
    ema.to(device)
