"""What the sampling loop of :class:`~sradm_diffusers.SRADMPipeline` calls, one idea per module.

- :mod:`.tiling`: the tile plan and the blended noise prediction over overlapping HR tiles.
- :mod:`.rrdb_start`: ``strength < 1``, starting from the RRDB head's output noised to an intermediate timestep.
- :mod:`.lr_consistency`: back-projecting every step's x_0 so that ``imresize(SR, 1/s)`` reproduces the LR input.
- :mod:`.prediction`: converting between a scheduler's model output and x_0 (clipping for schedulers that cannot).
- :mod:`.memory`: the memory a call needs, checked before sampling, and the C heap policy of the command line.
"""
