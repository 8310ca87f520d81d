"""Tiled sampling: one trajectory, U-Net on overlapping tiles, blended noise predictions (sampling.tiling)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

from sradm_diffusers import DEMO_MODEL, SAMPLE_IMAGE, RRDBEncoder, SRADMPipeline, build_pipeline
from sradm_diffusers.sampling.tiling import (
    TiledNoisePredictor,
    condition_halo,
    encode_features_tiled,
    encoder_halo,
    plan_tiles,
    tile_weights,
    unet_alignment,
)


def run(pipe, image, **kwargs):
    kwargs.setdefault("num_inference_steps", 3)
    return pipe(image, output_type="pt", **kwargs).images


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1]."""
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


# ---------------------------------------------------------------------------------------------------------------
# Geometry: receptive fields, alignment, tile layout, weights
# ---------------------------------------------------------------------------------------------------------------


def positive_weights(module: torch.nn.Module) -> torch.nn.Module:
    """float64 copy-in-place with small positive weights: no contribution cancels or underflows to zero, so every
    input inside the receptive field gets a nonzero gradient (random signs made far ones vanish in float32)."""
    module.double()
    generator = torch.Generator().manual_seed(0)
    for param in module.parameters():
        param.data.copy_(torch.rand(param.shape, generator=generator, dtype=torch.float64) * 0.1 + 0.01)
    return module


def measured_radius(module_fn, channels: int, size: int) -> int:
    """Receptive-field radius of ``module_fn`` measured by autograd: how far from the centre output pixel the
    input gradient reaches."""
    x = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    out = module_fn(x)
    out[:, :, size // 2, size // 2].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    return int(max(size // 2 - rows.min(), rows.max() - size // 2))


@pytest.mark.parametrize(
    "encoder_config",
    [
        dict(num_features=8, num_blocks=2, growth_channels=8),  # tiny
        dict(num_features=4, num_blocks=5, growth_channels=4),  # the demo model's depth (width does not matter)
        dict(num_features=4, num_blocks=4, growth_channels=4, feature_stride=2),  # trunk output not selected
        dict(num_features=4, num_blocks=4, growth_channels=4, feature_stride=3),  # deepest feature: block 3 of 4
    ],
)
def test_encoder_halo_is_its_receptive_field(encoder_config):
    encoder = positive_weights(RRDBEncoder(**encoder_config))
    halo = encoder_halo(encoder)
    assert halo == measured_radius(encoder, 3, 2 * halo + 9)


def test_condition_halo_is_the_transposed_convs_reach():
    torch.manual_seed(0)
    unet = positive_weights(build_pipeline("tiny").unet)
    # HR pixels of phase p (p::4) are one per LR pixel; their reach differs by phase.
    channels = unet.config.cond_channels
    measured = max(
        measured_radius(lambda f, p=phase: unet.condition(f)[:, :, p::4, p::4], channels, 11) for phase in range(4)
    )
    assert condition_halo(unet) == measured == 1


def test_alignment_covers_every_attention_window_grid():
    assert unet_alignment(build_pipeline("tiny").unet, 4) == 8  # window 4 on level 1
    assert unet_alignment(SRADMPipeline.from_pretrained(DEMO_MODEL).unet, 4) == 32  # window 8 on level 2
    assert unet_alignment(build_pipeline("div2k-x4").unet, 4) == 64  # window 8 on level 3


@pytest.mark.parametrize("height, width", [(320, 320), (116, 148), (40, 8), (1356, 2040), (96, 8)])
@pytest.mark.parametrize("tile, overlap", [(128, 32), (48, 8), (64, 0)])
def test_tiles_cover_the_canvas_aligned_and_overlapping(height, width, tile, overlap):
    align = 8
    tiles = plan_tiles(height, width, tile, overlap, align)
    covered = torch.zeros(height, width, dtype=torch.int64)
    for t in tiles:
        assert t.top % align == 0 and t.left % align == 0
        assert 0 < t.bottom - t.top <= tile and 0 < t.right - t.left <= tile
        assert t.bottom == min(t.top + tile, height) and t.right == min(t.left + tile, width)
        covered[t.top : t.bottom, t.left : t.right] += 1
    assert covered.min() >= 1
    for starts, ends, length in [
        (sorted({t.top for t in tiles}), sorted({t.bottom for t in tiles}), height),
        (sorted({t.left for t in tiles}), sorted({t.right for t in tiles}), width),
    ]:
        assert starts[0] == 0 and ends[-1] == length
        assert all(end - start >= overlap for start, end in zip(starts[1:], ends[:-1]))


def test_blend_weights_are_smooth_positive_and_sum_to_one():
    height, width, ramp = 116, 148, 16
    tiles = plan_tiles(height, width, 48, ramp, 8)
    weights = [tile_weights(t, height, width, ramp) for t in tiles]
    assert all(w.min() > 0 and w.max() <= 1 for w in weights)
    features = torch.zeros(1, 4, height // 4, width // 4)
    unet = build_pipeline("tiny").unet
    predictor = TiledNoisePredictor(unet, features, tiles, 4, ramp)
    total = torch.zeros(height, width, dtype=torch.float64)
    for t, share in zip(tiles, predictor.shares):
        total[t.top : t.bottom, t.left : t.right] += share.double()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)
    # Inside a tile the weight changes by at most pi/2 / ramp per pixel: a raised cosine, no steps.
    for w in weights:
        assert w.diff(dim=0).abs().max() <= np.pi / 2 / ramp + 1e-9
        assert w.diff(dim=1).abs().max() <= np.pi / 2 / ramp + 1e-9


# ---------------------------------------------------------------------------------------------------------------
# Conditioning is unchanged by tiling
# ---------------------------------------------------------------------------------------------------------------


def test_tiled_encoder_features_equal_the_whole_image_features():
    torch.manual_seed(0)
    encoder = RRDBEncoder(num_features=8, num_blocks=1, growth_channels=8, feature_stride=1)  # halo 17
    lr = torch.rand(2, 3, 61, 70) * 2 - 1
    whole = encoder(lr)
    # Cross-path tolerance: the same convolutions on differently sized inputs may use other oneDNN kernels.
    torch.testing.assert_close(encode_features_tiled(encoder, lr, 16), whole, atol=1e-5, rtol=1e-5)


def test_a_halo_one_pixel_short_changes_the_features(monkeypatch):
    """The halo is needed in full: one pixel less and tile borders change the features."""
    import sradm_diffusers.sampling.tiling as tiling

    encoder = positive_weights(RRDBEncoder(num_features=8, num_blocks=1, growth_channels=8, feature_stride=1))
    lr = torch.rand(1, 3, 61, 70, dtype=torch.float64) * 2 - 1
    halo = encoder_halo(encoder)
    torch.testing.assert_close(encode_features_tiled(encoder, lr, 16), encoder(lr), atol=1e-9, rtol=1e-9)
    monkeypatch.setattr(tiling, "encoder_halo", lambda _: halo - 1)
    assert (encode_features_tiled(encoder, lr, 16) - encoder(lr)).abs().max() > 1e-6


def test_tile_conditioning_equals_the_whole_image_conditioning():
    torch.manual_seed(0)
    unet = build_pipeline("tiny").unet
    features = torch.randn(2, unet.config.cond_channels, 29, 37)
    whole = unet.condition(features)
    tiles = plan_tiles(116, 148, 48, 8, 8)
    predictor = TiledNoisePredictor(unet, features, tiles, 4, 8)
    for t in tiles:
        torch.testing.assert_close(
            predictor.condition(t), whole[:, :, t.top : t.bottom, t.left : t.right], atol=1e-5, rtol=1e-5
        )


# ---------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------


def test_an_image_in_one_tile_gives_exactly_the_untiled_result(tiny_pipe, lr_image):
    untiled = run(tiny_pipe, lr_image, generator=torch.Generator().manual_seed(0))
    tiny_pipe.enable_tiling(tile_size=64, tile_overlap=8)  # 37x29 fits in one 64x64 tile: the same code path
    tiled = run(tiny_pipe, lr_image, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tiled, untiled)


def test_tiled_unet_calls_never_exceed_the_tile(tiny_pipe, lr_image, monkeypatch):
    shapes = {"unet": [], "condition": []}
    for name, method in [("unet", "forward"), ("condition", "condition")]:
        original = getattr(tiny_pipe.unet, method)

        def recorded(x, *args, _original=original, _name=name, **kwargs):
            shapes[_name].append(tuple(x.shape[-2:]))
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(tiny_pipe.unet, method, recorded)
    tiny_pipe.enable_tiling(tile_size=12, tile_overlap=2)
    run(tiny_pipe, lr_image, num_inference_steps=2)
    tiles = plan_tiles(116, 148, 48, 8, 8)
    assert len(tiles) == 12 and len(shapes["unet"]) == 2 * len(tiles)
    assert all(h <= 48 and w <= 48 for h, w in shapes["unet"])
    halo = condition_halo(tiny_pipe.unet)
    assert all(h <= 12 + 2 * halo and w <= 12 + 2 * halo for h, w in shapes["condition"])


@pytest.mark.parametrize("size", [(29, 37), (13, 51), (6, 9), (50, 31)])
def test_tiled_odd_and_small_sizes_match_untiled(tiny_pipe, size):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    untiled = run(tiny_pipe, image, generator=torch.Generator().manual_seed(0))
    tiny_pipe.enable_tiling(tile_size=8, tile_overlap=2)  # several tiles, except for the 6x9 image
    tiled = run(tiny_pipe, image, generator=torch.Generator().manual_seed(0))
    assert tiled.shape == untiled.shape == (1, 3, 4 * size[0], 4 * size[1])
    # Measured 52.0-80.9 dB over these sizes (lowest: 13x51); margin 3 dB (twice the MSE) for other CPUs' kernels.
    # Tiles averaged with flat weights (43.3-44.0 dB where there are several) or overwriting each other (42.0-44.6
    # dB) fail it. `python benchmarks/tiling_tolerances.py` measures all three.
    assert psnr(tiled, untiled) >= 49


def test_tiled_batches_samples_and_generator_lists(tiny_pipe, lr_image):
    tiny_pipe.enable_tiling(tile_size=12, tile_overlap=2)
    generators = lambda: [torch.Generator().manual_seed(seed) for seed in (3, 4, 5, 6)]
    other = np.ascontiguousarray(lr_image[::-1])
    batch = run(tiny_pipe, [lr_image, other], generator=generators(), num_images_per_prompt=2)
    assert batch.shape == (4, 3, 116, 148)
    assert (batch[0] - batch[1]).abs().max() > 1e-2  # two samples of one image differ
    singles = [
        run(tiny_pipe, lr_image, generator=generators()[:2], num_images_per_prompt=2),
        run(tiny_pipe, other, generator=generators()[2:], num_images_per_prompt=2),
    ]
    # Batch vs single: the same computation on other tensor shapes (oneDNN kernel choice), hence a tolerance.
    torch.testing.assert_close(batch, torch.cat(singles), atol=1e-4, rtol=0)


def test_disable_tiling_restores_the_whole_image_path(tiny_pipe, lr_image):
    untiled = run(tiny_pipe, lr_image, generator=torch.Generator().manual_seed(0))
    tiny_pipe.enable_tiling(tile_size=12, tile_overlap=2)
    tiny_pipe.disable_tiling()
    assert tiny_pipe.tiling is None
    assert torch.equal(run(tiny_pipe, lr_image, generator=torch.Generator().manual_seed(0)), untiled)


@pytest.mark.parametrize(
    "tile_size, tile_overlap, match",
    [
        (0, 0, "tile_size must be >= 1"),
        (-8, 2, "tile_size must be >= 1"),
        (16, 8, "less than half of tile_size"),
        (16, -1, "tile_overlap=-1 must be >= 0"),
        (16.0, 2, "tile_size must be an integer"),
        (16, "4", "tile_overlap must be an integer"),
        (True, 0, "tile_size must be an integer"),
    ],
)
def test_bad_tile_arguments_are_rejected(tiny_pipe, tile_size, tile_overlap, match):
    with pytest.raises(ValueError, match=match):
        tiny_pipe.enable_tiling(tile_size=tile_size, tile_overlap=tile_overlap)
    assert tiny_pipe.tiling is None


def test_a_stride_below_the_models_alignment_is_rejected(lr_image):
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)  # alignment 32 HR = 8 LR pixels
    pipe.enable_tiling(tile_size=9, tile_overlap=4)  # stride 5 LR pixels < 8
    with pytest.raises(ValueError, match="larger tile_size or a smaller tile_overlap"):
        run(pipe, lr_image, num_inference_steps=1)


# ---------------------------------------------------------------------------------------------------------------
# Seams, on the trained demo model (a random-weight U-Net is too smooth to show them)
# ---------------------------------------------------------------------------------------------------------------


def border_gradient_ratio(image: torch.Tensor, edges: list[int]) -> float:
    """Mean squared finite difference across the pixel lines at ``edges`` (rows and columns) over that across all
    other lines of ``image`` (B, 3, H, W), H == W."""
    across_cols = image.diff(dim=-1).pow(2).mean(dim=(0, 1, 2))
    across_rows = image.diff(dim=-2).pow(2).mean(dim=(0, 1, 3))
    energy = torch.cat([across_cols, across_rows])
    at_edges = torch.zeros_like(energy, dtype=torch.bool)
    for edge in edges:
        at_edges[edge - 1] = at_edges[len(across_cols) + edge - 1] = True
    return float(energy[at_edges].mean() / energy[~at_edges].mean())


@pytest.fixture(scope="module")
def demo_seam_case():
    """The demo model with DDIM (eta 0) on an 80x80 crop of the bundled photo, fixed x_T; the untiled result."""
    torch.manual_seed(0)
    pipe = SRADMPipeline.from_pretrained(DEMO_MODEL)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    image = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))[24:104, 24:104]
    latents = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    sample = lambda: run(pipe, image, num_inference_steps=5, latents=latents, eta=0.0)
    return pipe, sample, sample()


def tile_edges(size: int, tile: int, overlap: int) -> list[int]:
    tiles = plan_tiles(size, size, tile, overlap, 32)
    assert len(tiles) == 9  # 3 x 3
    return sorted({t.left for t in tiles if t.left > 0} | {t.right for t in tiles if t.right < size})


def test_3x3_tiles_match_untiled_without_seams(demo_seam_case):
    pipe, sample, untiled = demo_seam_case
    pipe.enable_tiling(tile_size=32, tile_overlap=8)
    try:
        tiled = sample()
    finally:
        pipe.disable_tiling()
    # Measured 46.8 dB; margin 1.8 dB (1.5 times the MSE). Without the blend's ramps the same tiles reach 41.8 dB
    # (flat weights) or 40.1 dB (each tile overwriting the last), which fail it (benchmarks/tiling_tolerances.py).
    assert psnr(tiled, untiled) >= 45
    # Gradient energy on the tile borders relative to elsewhere, against the same ratio of the untiled image:
    # the content alone makes these lines differ from the rest, a seam would add to it.
    edges = tile_edges(320, 128, 32)
    ratio = border_gradient_ratio(tiled, edges) / border_gradient_ratio(untiled, edges)
    assert abs(ratio - 1) <= 0.10


def test_the_seam_measure_detects_unblended_tiles(demo_seam_case):
    """Control: the same tiles averaged with flat weights (no ramp) leave visible steps at the tile borders."""
    pipe, sample, untiled = demo_seam_case
    pipe.enable_tiling(tile_size=32, tile_overlap=0)  # same 3 x 3 tiles (alignment keeps a 32-pixel overlap)
    try:
        tiled = sample()
    finally:
        pipe.disable_tiling()
    edges = tile_edges(320, 128, 0)
    assert border_gradient_ratio(tiled, edges) / border_gradient_ratio(untiled, edges) > 1.10


# ---------------------------------------------------------------------------------------------------------------
# sradm upscale --tile / --tile-overlap and automatic tiling
# ---------------------------------------------------------------------------------------------------------------


def _write_png(path, height, width):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return image


def test_cli_tile_option_gives_the_api_result(tmp_path, model_dir):
    from sradm_diffusers.commands.cli import main

    image = _write_png(tmp_path / "p.png", 20, 30)
    assert main(["upscale", str(tmp_path / "p.png"), "--model", model_dir, "--steps", "2", "--seed", "0",
                 "--tile", "12", "--tile-overlap", "2", "-o", str(tmp_path / "out.png"), "--device", "cpu"]) == 0
    pipe = SRADMPipeline.from_pretrained(model_dir)  # on the CPU, as the CLI was told (its default is cuda if any)
    pipe.enable_tiling(12, 2)
    expected = pipe(
        image, num_inference_steps=2, generator=[torch.Generator().manual_seed(0)], lr_consistency=True
    ).images[0]  # the CLI back-projects by default
    written = np.asarray(Image.open(tmp_path / "out.png"), dtype=np.int16)
    # The same computation in another process: rounding to uint8 may differ by one level.
    assert np.abs(written - np.asarray(expected, dtype=np.int16)).max() <= 1


def test_cli_tiles_large_inputs_automatically_and_says_so(tmp_path, model_dir, capsys, monkeypatch):
    import sradm_diffusers.commands.runtime as runtime
    import sradm_diffusers.defaults as defaults
    from sradm_diffusers.commands.cli import main

    for module in (defaults, runtime):  # the policy (defaults.choose_tiling) and its message (runtime)
        monkeypatch.setattr(module, "AUTO_TILE_PIXELS", 100)
        monkeypatch.setattr(module, "DEFAULT_TILE", 8)
    _write_png(tmp_path / "big.png", 12, 10)
    _write_png(tmp_path / "small.png", 9, 11)
    used = []
    monkeypatch.setattr(SRADMPipeline, "enable_tiling", lambda self, *a: used.append(a) or setattr(self, "tiling", a))
    assert main(["upscale", str(tmp_path / "big.png"), str(tmp_path / "small.png"), "--model", model_dir,
                 "--steps", "1", "--tile-overlap", "2"]) == 0
    err = capsys.readouterr().err
    assert used == [(8, 2)]
    assert err.count("sampling in tiles of 8 px") == 1 and "big.png: 10x12 is over 100 pixels" in err
    used.clear()
    assert main(["upscale", str(tmp_path / "big.png"), "--model", model_dir, "--steps", "1", "--tile", "0"]) == 0
    assert used == [] and "sampling in tiles" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [(["--tile", "8", "--tile-overlap", "4"], "less than half"), (["--tile", "-3"], "--tile"),
     (["--tile-overlap", "64"], "less than half")],
)
def test_cli_bad_tile_options_exit_2_in_one_line(tmp_path, model_dir, capsys, extra, message):
    from sradm_diffusers.commands.cli import main

    _write_png(tmp_path / "p.png", 8, 8)
    assert main(["upscale", str(tmp_path / "p.png"), "--model", model_dir, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
