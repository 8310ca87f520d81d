"""CPU offload covers every module: all U-Net work (conditioning included) runs inside hooked forwards.

On a machine without an accelerator the execution device is the CPU, so device placement alone proves nothing:
these tests wrap accelerate's offload hooks and record, for every module with parameters, whether it ran while its
component's hook (model offload) or its own hook (sequential offload) was active, on which device, and in what order.
"""

import pytest
import torch
from diffusers import DDIMScheduler

from sradm_diffusers import build_pipeline, imresize
from sradm_diffusers.pipeline import _pad_bottom_right
from sradm_diffusers.sampling.tiling import TiledNoisePredictor, plan_tiles, unet_alignment

pytest.importorskip("accelerate")


def _pipe():
    torch.manual_seed(0)
    pipe = build_pipeline("tiny", upscale_factor=4)
    for module in pipe.unet.modules():  # zero-initialised attention outputs would hide the attention entirely
        if hasattr(module, "to_out"):
            torch.nn.init.normal_(module.to_out.weight, std=0.05)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(shape, seed=3):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _reference(pipe, lr_image, latents, k, steps, tiles=None):
    """The sampling loop as it was before offload support: the LR batch repeated K times, then encoded, then
    ``unet.condition`` called outside the U-Net's forward (whole image, or per tile with ``TiledNoisePredictor``'s
    own ``condition``); DDIM with eta=0 is deterministic given x_T."""
    from sradm_diffusers.image_processing import preprocess

    lr = preprocess(lr_image).repeat_interleave(k, dim=0)
    height, width = lr.shape[-2:]
    pad_h, pad_w = pipe._lr_padding(height, width)
    features = pipe.lr_encoder(_pad_bottom_right(lr, pad_h, pad_w))
    if tiles is None:
        cond = pipe.unet.condition(features)

        def predict(x, t):
            return pipe.unet(x, t, cond).sample
    else:
        tiled = TiledNoisePredictor(pipe.unet, features, tiles, 4, ramp=16)

        def predict(x, t):
            eps = torch.zeros_like(x)
            for tile, share in zip(tiled.tiles, tiled.shares):
                region = (slice(None), slice(None), slice(tile.top, tile.bottom), slice(tile.left, tile.right))
                eps[region] += share * pipe.unet(x[region], t, tiled.condition(tile)).sample
            return eps

    x = _pad_bottom_right(latents, 4 * pad_h, 4 * pad_w)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(predict(x, t), t, x).prev_sample
    residual = x[:, :, : 4 * height, : 4 * width] / pipe.config.residual_scale
    return ((imresize(lr, 4).clamp(-1, 1) + residual).clamp(-1, 1) + 1) / 2


@torch.no_grad()
@pytest.mark.parametrize("tiled", [False, True])
def test_conditioning_in_forward_matches_external_conditioning(lr_image, tiled):
    pipe = _pipe()
    latents = _latents((2, 3, 116, 148))
    tiles = None
    if tiled:
        pipe.enable_tiling(tile_size=16, tile_overlap=4)
        padded = [n + p for n, p in zip((29, 37), pipe._lr_padding(29, 37))]
        tiles = plan_tiles(4 * padded[0], 4 * padded[1], 64, 16, unet_alignment(pipe.unet, 4))
        assert len(tiles) > 1
    expected = _reference(pipe, lr_image, latents, k=2, steps=3, tiles=tiles)
    out = pipe(lr_image, num_inference_steps=3, latents=latents, num_images_per_prompt=2, output_type="pt").images
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert pipe.unet._condition_cache is None  # released after sampling


def test_encoder_and_conditioning_run_once_per_image(lr_image):
    pipe = _pipe()
    calls = {"encoder": [], "cond_proj": [], "unet": []}
    pipe.lr_encoder.register_forward_pre_hook(lambda m, args: calls["encoder"].append(args[0].shape[0]))
    pipe.unet.cond_proj.register_forward_pre_hook(lambda m, args: calls["cond_proj"].append(args[0].shape[0]))
    pipe.unet.register_forward_pre_hook(lambda m, args: calls["unet"].append(args[0].shape[0]))
    pipe([lr_image, lr_image[::-1].copy()], num_inference_steps=3, num_images_per_prompt=3, output_type="pt")
    assert calls == {"encoder": [2], "cond_proj": [2], "unet": [6, 6, 6]}


def _normalized(device):
    """The device a tensor placed on ``device`` reports (torch reports "cpu:0" as "cpu")."""
    return torch.empty(0, device=device).device


def _record_calls(pipe, order):
    """Forward pre-hooks on every module with parameters: append ("call", (component, module name, input device))
    to ``order`` in call order."""
    for component in ("lr_encoder", "unet"):
        for name, module in getattr(pipe, component).named_modules():
            if any(True for _ in module.parameters(recurse=False)):

                def hook(module, args, kwargs, key=(component, name)):
                    first = next(a for a in (*args, *kwargs.values()) if torch.is_tensor(a))
                    order.append(("call", (*key, first.device)))

                module.register_forward_pre_hook(hook, with_kwargs=True)


def _wrap(hook, log, key):
    """Make accelerate's ``hook`` log ``key`` on pre_forward and the end on post_forward."""
    pre, post = hook.pre_forward, hook.post_forward

    def pre_forward(module, *args, **kwargs):
        log.append(("enter", key))
        return pre(module, *args, **kwargs)

    def post_forward(module, output):
        log.append(("exit", key))
        return post(module, output)

    hook.pre_forward, hook.post_forward = pre_forward, post_forward


def test_model_cpu_offload_runs_every_module_inside_its_components_hook(lr_image):
    pipe = _pipe()
    expected = pipe(lr_image, num_inference_steps=3, latents=_latents((1, 3, 116, 148)), output_type="pt").images
    pipe.enable_model_cpu_offload(device="cpu")
    timeline = []  # module calls and hook entries/exits, interleaved in the order they happened
    for component in ("lr_encoder", "unet"):
        _wrap(getattr(pipe, component)._hf_hook, timeline, component)
    _record_calls(pipe, timeline)
    out = pipe(lr_image, num_inference_steps=3, latents=_latents((1, 3, 116, 148)), output_type="pt").images
    torch.testing.assert_close(out, expected, atol=0, rtol=0)

    active, seen = None, set()
    for event, item in timeline:
        if event == "enter":
            active = item
        elif event == "exit":
            active = None
        else:
            component, name, device = item
            assert active == component, f"{component}.{name} ran outside {component}'s offload hook"
            assert device == _normalized(pipe._execution_device)
            seen.add((component, name))
    entered = [item for event, item in timeline if event == "enter"]
    assert entered == ["lr_encoder"] + ["unet"] * 3  # model_cpu_offload_seq order, one U-Net call per step
    with_params = {
        (c, n) for c in ("lr_encoder", "unet") for n, m in getattr(pipe, c).named_modules()
        if any(True for _ in m.parameters(recurse=False))
    }
    head = ("upsample_convs", "hr_conv", "conv_last")  # the RRDB regression head: never run by the diffusion path
    unused = {("lr_encoder", n) for n, _ in pipe.lr_encoder.named_modules() if n.startswith(head)}
    assert with_params - unused - seen == set(), "modules with parameters that never ran"
    assert ("unet", "cond_proj") in seen


def test_sequential_cpu_offload_runs_every_module_through_its_own_hook(lr_image):
    pipe = _pipe()
    expected = pipe(lr_image, num_inference_steps=2, latents=_latents((1, 3, 116, 148)), output_type="pt").images
    pipe.enable_sequential_cpu_offload(device="cpu")
    # diffusers names the execution device "cpu:0", with which accelerate 1.16 fails to offload a CPU weight back
    # to the meta device (it rebuilds the Parameter from a plain tensor); plain "cpu" is the same device for torch.
    for component in ("lr_encoder", "unet"):
        for module in getattr(pipe, component).modules():
            if hasattr(module, "_hf_hook") and getattr(module._hf_hook, "execution_device", None) is not None:
                module._hf_hook.execution_device = torch.device("cpu")
    calls, hooked = [], []
    _record_calls(pipe, calls)
    for component in ("lr_encoder", "unet"):
        for name, module in getattr(pipe, component).named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                assert hasattr(module, "_hf_hook"), f"{component}.{name} has no offload hook"
                _wrap(module._hf_hook, hooked, (component, name))
    out = pipe(lr_image, num_inference_steps=2, latents=_latents((1, 3, 116, 148)), output_type="pt").images
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)

    calls = [item for _, item in calls]
    ran = [(c, n) for c, n, _ in calls]
    assert [key for event, key in hooked if event == "enter"] == ran  # every call went through its own hook
    assert all(device == _normalized(pipe._execution_device) for *_, device in calls)
    assert ("unet", "cond_proj") in ran
    assert ran.index(("unet", "cond_proj")) > max(i for i, (c, _) in enumerate(ran) if c == "lr_encoder")
    # Weights sit on the meta device between calls: nothing could have run without its hook loading them.
    assert pipe.unet.cond_proj.weight.device.type == "meta"
