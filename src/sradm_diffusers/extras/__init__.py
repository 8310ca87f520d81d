"""The paper's uses of a diffusion SR model beyond one sample (library API; the commands live in ``commands``).

- :mod:`.uncertainty`: the mean and per-pixel spread of K samples.
- :mod:`.interpolation`: SR images along a spherical interpolation between two starting noises.
- :mod:`.fusion`: an SR image whose masked region follows a reference image.
"""
