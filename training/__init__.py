"""Training SRADM with accelerate (``accelerate launch training/train.py``), as an importable package.

One idea per module, in the order a run uses them:

- :mod:`training.train`: the script; ``main`` orchestrates the modules below (its 0.1 names stay importable).
- :mod:`training.args`, :mod:`training.recipes`: the flags and ``--config`` recipe files.
- :mod:`training.run_setup`: the accelerator, the number of steps, the trackers.
- :mod:`training.models`, :mod:`training.losses`, :mod:`training.optim`, :mod:`training.ema`: what is trained, how.
- :mod:`training.sources`, :mod:`training.pairs`, :mod:`training.pair_datasets`, :mod:`training.image_store`,
  :mod:`training.sampler`, :mod:`training.seeds`, :mod:`training.loader`: images -> (LR, HR) pairs -> batches
  (LR = MATLAB-bicubic of the HR crop), in a resumable, sharded order.
- :mod:`training.checkpoints`, :mod:`training.resume`: ``checkpoint-<step>`` folders, complete or absent, and
  continuing exactly where one left off.
- :mod:`training.loop`: the step loop (:class:`~training.loop.Trainer`); :mod:`training.divergence`: NaN/inf checks;
  :mod:`training.validation`: validation scored as ``sradm evaluate`` scores.
- :mod:`training.finish`, :mod:`training.atomic_export`, :mod:`training.model_card`: the final model, swapped in,
  with its card; :mod:`training.safe_io`: crash points and the disk-full error every save shares.
- :mod:`training.data`, :mod:`training.train_utils`: the 0.1 modules, now re-exports of the names above.
- :mod:`training.export_pipeline`, :mod:`training.prepare_demo_data` (with :mod:`training.demo_sources`): scripts
  for exporting and for the CPU demo's data.

``train.py`` and ``prepare_demo_data.py`` also run as scripts: they then put this folder's parent on ``sys.path``
and import their siblings as ``training.*``, so every module is loaded once, under one name.
"""
