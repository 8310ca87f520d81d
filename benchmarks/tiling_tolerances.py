"""The errors that the tiling tests' tolerances are set from: tiled vs untiled, and two broken blends for contrast.

    python benchmarks/tiling_tolerances.py

Prints, for the blended tiles (the method) and two broken variants (flat tile weights, i.e. a plain average in the
overlaps; and each tile overwriting the last, i.e. no blending at all):

- ``demo3x3``: PSNR (dB) of 3x3 tiles vs untiled, demo model, 80x80 crop, DDIM 5 steps
  (``tests/test_tiling.py::test_3x3_tiles_match_untiled_without_seams``);
- ``tiny_odd``: PSNR per size of ``tests/test_tiling.py::test_tiled_odd_and_small_sizes_match_untiled``;
- ``rrdb_tiled``: mean and max absolute difference of ``tests/test_few_step.py::
  test_rrdb_start_with_tiling_matches_untiled`` (strength 0.5, DDIM trailing, 4 steps).
"""

import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_tiling import psnr, run  # noqa: E402

from sradm_diffusers import DEMO_MODEL, SAMPLE_IMAGE, SRADMPipeline, build_pipeline

from sradm_diffusers.sampling import tiling  # noqa: E402


def _overwrite(self, sample, timestep):
    """TiledNoisePredictor.__call__ without blending: every tile overwrites its region."""
    eps = torch.zeros_like(sample)
    for tile in self.tiles:
        region = (slice(None), slice(None), slice(tile.top, tile.bottom), slice(tile.left, tile.right))
        patch, origin = self.features_for(tile)
        eps[region] = self.unet(sample[region], timestep, lr_features=patch, features_origin=origin).sample
    return eps


def variants():
    """Yield each variant's name with the tiling module patched accordingly (restored afterwards)."""
    ramp, call = tiling._ramp, tiling.TiledNoisePredictor.__call__
    try:
        yield "blend"
        tiling._ramp = lambda size, width, rise, fall: torch.ones(size, dtype=torch.float64)
        yield "flat"
        tiling._ramp = ramp
        tiling.TiledNoisePredictor.__call__ = _overwrite
        yield "overwrite"
    finally:
        tiling._ramp, tiling.TiledNoisePredictor.__call__ = ramp, call


def tiny():
    torch.manual_seed(0)
    pipe = build_pipeline("tiny", upscale_factor=4)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))[24:104, 24:104]
    latents = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    untiled = run(pipe, image, num_inference_steps=5, latents=latents, eta=0.0)
    for name in variants():
        pipe.enable_tiling(tile_size=32, tile_overlap=8)
        tiled = run(pipe, image, num_inference_steps=5, latents=latents, eta=0.0)
        pipe.disable_tiling()
        print(f"demo3x3    {name:<10} PSNR {psnr(tiled, untiled):.2f} dB", flush=True)

    for name in variants():
        values = []
        for size in [(29, 37), (13, 51), (6, 9), (50, 31)]:
            pipe = tiny()
            image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
            untiled = run(pipe, image, generator=torch.Generator().manual_seed(0))
            pipe.enable_tiling(tile_size=8, tile_overlap=2)
            values.append(psnr(run(pipe, image, generator=torch.Generator().manual_seed(0)), untiled))
        print(f"tiny_odd   {name:<10} PSNR " + ", ".join(f"{v:.2f}" for v in values) + " dB", flush=True)

    y, x = np.mgrid[0:29, 0:37]  # tests/conftest.py's lr_image
    image = np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.float32)
    image[8:18, 10:20] = 220
    image = np.clip(image + np.random.default_rng(0).normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    noise = torch.randn(1, 3, 116, 148, generator=torch.Generator().manual_seed(7))
    for name in variants():
        pipe = tiny()
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
        whole = pipe(image, num_inference_steps=4, strength=0.5, latents=noise, output_type="pt").images
        pipe.enable_tiling(tile_size=16, tile_overlap=4)
        tiled = pipe(image, num_inference_steps=4, strength=0.5, latents=noise, output_type="pt").images
        difference = (tiled - whole).abs()
        print(f"rrdb_tiled {name:<10} mean {difference.mean():.2e} max {difference.max():.2e}", flush=True)


if __name__ == "__main__":
    main()
