"""The ``sradm`` command: one module per subcommand, and the runtime they share.

- :mod:`.cli`: the argument parser and ``main`` (the console script); it imports a subcommand only to run it.
- :mod:`.upscale`, :mod:`.evaluate` (with :mod:`.eval_pairs` and :mod:`.eval_report`), :mod:`.interpolate`,
  :mod:`.fuse`, :mod:`.demo`: the subcommands. Each reads its sampling defaults from :mod:`sradm_diffusers.defaults`;
  none imports another.
- :mod:`.runtime` (errors, model loading, device, sampler, progress lines), :mod:`.files` (image files in and out),
  :mod:`.atomic` (writes that never leave a partial file), :mod:`.distributed` (the share of each process under
  ``accelerate launch``): what the subcommands share.

Nothing in the library (the pipeline, the models, the sampling modules) imports this package.
"""
