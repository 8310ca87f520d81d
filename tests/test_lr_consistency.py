"""lr_consistency: back-projection meets imresize(SR, 1/s) == LR, and every scheduler sees the projected x_0."""

import diffusers
import pytest
import torch

from sradm_diffusers import imresize
from sradm_diffusers.sampling.lr_consistency import LRConsistency, back_project

SCHEDULERS = {
    "DDPMScheduler": {},
    "DDIMScheduler": {"timestep_spacing": "trailing"},
    "DPMSolverMultistepScheduler": {"timestep_spacing": "trailing", "algorithm_type": "sde-dpmsolver++"},
    "UniPCMultistepScheduler": {"timestep_spacing": "trailing"},
    "EulerDiscreteScheduler": {"timestep_spacing": "trailing"},
}


def _lr_and_up(seed=0, size=(12, 10)):
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand((1, 3, *size), generator=g) * 1.2 - 0.6  # away from the [-1, 1] clamp
    return lr, imresize(lr, 4).clamp(-1, 1)


def test_back_projection_reproduces_the_lr_and_keeps_high_frequencies():
    lr, up = _lr_and_up()
    g = torch.Generator().manual_seed(1)
    sr = (up + 0.2 * torch.randn(up.shape, generator=g)).clamp(-1, 1)
    before = (imresize(sr, 0.25) - lr).abs().max()
    projected = back_project(sr, lr, 4, 20, torch.full_like(sr, -1), torch.full_like(sr, 1))
    after = (imresize(projected, 0.25) - lr).abs().max()
    assert before > 0.02
    assert after < 0.25 * 2 / 255  # under a quarter of one 8-bit level (2/255 in [-1, 1] units)
    # The high frequencies (what imresize(., 1/4) then imresize(., 4) loses) keep their direction: the sampled
    # detail survives (measured cosine 0.93 for this white-noise detail, which aliases into the LR band).
    def high_pass(x):
        return (x - imresize(imresize(x, 0.25), 4)).flatten()

    assert torch.nn.functional.cosine_similarity(high_pass(sr), high_pass(projected), dim=0) > 0.85


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_sees_the_projected_x0(name):
    """The corrected model output must make each scheduler compute exactly the back-projected x_0."""
    scheduler = getattr(diffusers, name)(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", **SCHEDULERS[name])
    scheduler.set_timesteps(10)
    t = scheduler.timesteps[3]
    lr, up = _lr_and_up()
    consistency = LRConsistency(lr, up, 4, residual_scale=2.0)
    g = torch.Generator().manual_seed(2)
    sample = torch.randn(up.shape, generator=g) * scheduler.init_noise_sigma
    model_input = scheduler.scale_model_input(sample, t)
    eps = torch.randn(up.shape, generator=g)
    corrected = consistency.correct_model_output(scheduler, eps, model_input, t)

    alpha_bar = scheduler.alphas_cumprod[int(t)]
    x0 = ((model_input - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()).clamp(-1, 1)
    expected = consistency.project(x0)
    if hasattr(scheduler, "convert_model_output"):  # multistep solvers: their data prediction
        scheduler._init_step_index(t)
        seen = scheduler.convert_model_output(corrected, sample=sample)
    else:
        seen = scheduler.step(corrected, t, sample).pred_original_sample
    # Euler keeps its own float32 sigma table; abar from it and from alphas_cumprod agree to ~1e-7 relative, which
    # x_0 = x_t - sigma * eps (sigma ~ 10 here) scales up.
    assert torch.allclose(seen, expected, atol=1e-3 if name.startswith("Euler") else 1e-4)
    # and that x_0 is closer to the constraint than the prediction (4 iterations from a far-off random x_0)
    def lr_error(x):
        return (imresize(up + x / 2.0, 0.25) - lr).abs().mean()

    assert lr_error(expected) < 0.5 * lr_error(x0)


@pytest.mark.parametrize("name", ["DDPMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler"])
def test_pipeline_output_matches_its_lr_input(demo_pipe, name):
    import numpy as np
    from PIL import Image

    from sradm_diffusers import SAMPLE_IMAGE

    demo_pipe.scheduler = getattr(diffusers, name).from_config(demo_pipe.scheduler.config, **SCHEDULERS[name])
    lr = torch.from_numpy(np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))[40:56, 60:80]).permute(2, 0, 1)
    lr = lr[None].float() / 255
    kwargs = dict(num_inference_steps=6, output_type="pt")
    plain = demo_pipe(lr, generator=torch.Generator().manual_seed(0), **kwargs).images
    sr = demo_pipe(lr, generator=torch.Generator().manual_seed(0), lr_consistency=True, **kwargs).images
    assert sr.shape == plain.shape == (1, 3, 64, 80)
    error_plain = (imresize(plain, 0.25) - lr).abs().max()
    error = (imresize(sr, 0.25) - lr).abs().max()
    assert error < 0.5 / 255 < error_plain  # rounds to the LR's 8-bit values
