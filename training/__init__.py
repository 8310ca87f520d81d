"""Training SRADM with accelerate (``accelerate launch training/train.py``), as an importable package.

- :mod:`training.train`: the two-stage script (RRDB encoder, then the diffusion U-Net) and its step loop.
- :mod:`training.data`: training pairs from Hub datasets and image folders (LR = MATLAB-bicubic of the HR crop).
- :mod:`training.image_store`: each image decoded once into a cached store that loader workers crop from.
- :mod:`training.train_utils`: recipes, checkpoints, atomic export, the resumable epoch sampler.
- :mod:`training.model_card`, :mod:`training.export_pipeline`, :mod:`training.prepare_demo_data`: publishing, exporting
  and the CPU demo's data.

``train.py`` also runs as a script: it then puts this folder's parent on ``sys.path`` and imports its siblings as
``training.*``, so every module is loaded once, under one name.
"""
