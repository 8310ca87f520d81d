"""SRADM super-resolution as a diffusers pipeline.

Public API: ``SRADMPipeline``, ``SRADMUNet``, ``RRDBEncoder``, ``build_pipeline``, ``imresize``, the bundled
``DEMO_MODEL`` (a pipeline folder) and ``SAMPLE_IMAGE`` (an LR photo), and the sampling defaults every front end
uses, ``DEFAULT_SAMPLING`` (a :class:`~sradm_diffusers.defaults.SamplingSettings`; torch-free module).
"""

# The diffusers pipeline loader resolves a component's base class as an attribute of the library named in
# model_index.json ("sradm_diffusers"), so ModelMixin must be reachable here. It is not part of our API.
from diffusers import ModelMixin  # noqa: F401

from .defaults import DEFAULT_SAMPLING, SamplingSettings
from .imresize import imresize
from .models import RRDBEncoder, SRADMUNet
from .pipeline import SRADMPipeline
from .presets import PRESETS, build_pipeline
from .resources import DEMO_MODEL, SAMPLE_IMAGE
from . import dispatch as _dispatch

# DiffusionPipeline.from_pretrained(SRADM folder or repo) returns SRADMPipeline once the package is imported.
_dispatch.install()

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SAMPLING",
    "DEMO_MODEL",
    "PRESETS",
    "RRDBEncoder",
    "SAMPLE_IMAGE",
    "SRADMPipeline",
    "SRADMUNet",
    "SamplingSettings",
    "build_pipeline",
    "imresize",
]
