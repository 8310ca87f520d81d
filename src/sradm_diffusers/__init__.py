"""SRADM super-resolution as a diffusers pipeline.

Public API: ``SRADMPipeline``, ``SRADMUNet``, ``RRDBEncoder``, ``build_pipeline``, ``imresize``, and the bundled
``DEMO_MODEL`` (a pipeline folder) and ``SAMPLE_IMAGE`` (an LR photo).
"""

# The diffusers pipeline loader resolves a component's base class as an attribute of the library named in
# model_index.json ("sradm_diffusers"), so ModelMixin must be reachable here. It is not part of our API.
from diffusers import ModelMixin  # noqa: F401

from .imresize import imresize
from .models import RRDBEncoder, SRADMUNet
from .pipeline import SRADMPipeline
from .presets import PRESETS, build_pipeline
from .resources import DEMO_MODEL, SAMPLE_IMAGE
from .loading import dispatch as _dispatch
from . import _moved

# DiffusionPipeline.from_pretrained(SRADM folder or repo) returns SRADMPipeline once the package is imported.
_dispatch.install()
# sradm_diffusers.sampling.tiling and the other flat paths of 0.1 still import (FutureWarning).
_moved.install()

__version__ = "0.1.0"

__all__ = [
    "DEMO_MODEL",
    "PRESETS",
    "RRDBEncoder",
    "SAMPLE_IMAGE",
    "SRADMPipeline",
    "SRADMUNet",
    "build_pipeline",
    "imresize",
]
