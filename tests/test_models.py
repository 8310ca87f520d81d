import math

import pytest
import torch

from sradm_diffusers import RRDBEncoder, SRADMUNet
from sradm_diffusers.models.attention import WindowAttention


def naive_window_attention(module: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Eq. 13 written out pixel by pixel: each pixel attends to the real pixels of its own window."""
    batch, channels, height, width = x.shape
    win, heads = module.window_size, module.num_heads
    head_dim = channels // heads
    h = module.norm(x)
    out = torch.zeros_like(x)
    for b in range(batch):
        for y in range(height):
            for xx in range(width):
                y0, x0 = (y // win) * win, (xx // win) * win
                keys = [(ky, kx) for ky in range(y0, min(y0 + win, height)) for kx in range(x0, min(x0 + win, width))]
                qkv_q = module.to_qkv(h[b, :, y, xx])
                q = qkv_q[:channels]
                kv = torch.stack([module.to_qkv(h[b, :, ky, kx]) for ky, kx in keys])
                k, v = kv[:, channels : 2 * channels], kv[:, 2 * channels :]
                z = []
                for head in range(heads):
                    sl = slice(head * head_dim, (head + 1) * head_dim)
                    weights = torch.softmax(k[:, sl] @ q[sl] / math.sqrt(head_dim), dim=0)
                    z.append(weights @ v[:, sl])
                out[b, :, y, xx] = module.to_out(torch.cat(z))
    return x + out


@pytest.mark.parametrize("size", [(8, 8), (7, 5), (11, 9), (3, 2)])
def test_window_attention_matches_naive_definition(size):
    torch.manual_seed(0)
    module = WindowAttention(channels=8, window_size=4, head_dim=4)
    torch.nn.init.normal_(module.to_out.weight)  # the default zero init would hide the attention term
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(module(x), naive_window_attention(module, x), atol=1e-5, rtol=1e-5)


def test_window_attention_is_local_to_windows():
    torch.manual_seed(0)
    module = WindowAttention(channels=8, window_size=4, head_dim=4)
    torch.nn.init.normal_(module.to_out.weight)
    module.norm = torch.nn.Identity()  # GroupNorm statistics are global; remove them to test locality
    x = torch.randn(1, 8, 8, 8)
    changed = x.clone()
    changed[:, :, 6, 6] += 5.0  # a pixel in the bottom-right window
    with torch.no_grad():
        diff = (module(changed) - module(x)).abs().sum(dim=1)[0]
    assert diff[:4, :].max() == 0 and diff[:, :4].max() == 0
    assert diff[4:, 4:].max() > 0


def test_window_attention_rejects_bad_head_dim():
    with pytest.raises(ValueError, match="divisible by head_dim"):
        WindowAttention(channels=12, window_size=4, head_dim=8)


def test_rrdb_encoder_shapes_and_selected_features():
    encoder = RRDBEncoder(num_features=8, num_blocks=8, growth_channels=4, upscale_factor=8)
    assert encoder.out_channels == 3 * 8  # blocks 3, 6 and the trunk output (every third of 9)
    lr = torch.rand(2, 3, 5, 7) * 2 - 1
    with torch.no_grad():
        features = encoder(lr)
        sr = encoder.upscale(lr)
    assert features.shape == (2, 24, 5, 7)
    assert sr.shape == (2, 3, 40, 56)


def test_rrdb_encoder_rejects_non_power_of_two_factor():
    with pytest.raises(ValueError, match="power of two"):
        RRDBEncoder(num_features=8, num_blocks=2, growth_channels=4, upscale_factor=3)


def tiny_unet(**overrides) -> SRADMUNet:
    config = dict(
        base_channels=16, channel_mults=(1, 2, 2), attention_levels=(False, True, True), attention_window=4,
        attention_head_dim=8, cond_channels=8, upscale_factor=4,
    )
    config.update(overrides)
    return SRADMUNet(**config)


def test_unet_condition_and_forward_shapes():
    unet = tiny_unet()
    features = torch.randn(2, 8, 5, 3)
    cond = unet.condition(features)
    assert cond.shape == (2, 16, 20, 12)
    eps = unet(torch.randn(2, 3, 20, 12), torch.tensor([3, 70]), cond).sample
    assert eps.shape == (2, 3, 20, 12)


def test_unet_depth_is_configurable():
    reference_depth = tiny_unet(channel_mults=(1, 2, 2, 4), attention_levels=(False, False, True, True))
    paper_depth = tiny_unet(channel_mults=(1, 1, 2, 2, 4), attention_levels=(False, False, False, True, True))
    assert reference_depth.size_multiple == 8 and len(reference_depth.downsamplers) == 3
    assert paper_depth.size_multiple == 16 and len(paper_depth.downsamplers) == 4
    cond = paper_depth.condition(torch.randn(1, 8, 4, 4))
    assert paper_depth(torch.randn(1, 3, 16, 16), 5, cond).sample.shape == (1, 3, 16, 16)


def test_unet_uses_timestep_and_condition():
    torch.manual_seed(0)
    unet = tiny_unet()
    x, cond = torch.randn(1, 3, 16, 16), unet.condition(torch.randn(1, 8, 4, 4))
    with torch.no_grad():
        base = unet(x, 10, cond).sample
        assert not torch.allclose(base, unet(x, 50, cond).sample)
        assert not torch.allclose(base, unet(x, 10, cond * 0).sample)
        torch.testing.assert_close(base, unet(x, torch.tensor([10.0]), cond).sample)


def test_unet_rejects_unpadded_sizes_and_mismatched_condition():
    unet = tiny_unet()
    cond = unet.condition(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="multiple of 4"):
        unet(torch.randn(1, 3, 18, 16), 1, cond)
    with pytest.raises(ValueError, match="cond has shape"):
        unet(torch.randn(1, 3, 20, 16), 1, cond)


def test_unet_rejects_attention_flags_of_wrong_length():
    with pytest.raises(ValueError, match="one attention flag per level"):
        tiny_unet(attention_levels=(True,))


def _grads(model, loss_fn):
    model.zero_grad()
    loss_fn().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    unet = tiny_unet()
    for module in unet.modules():  # make attention contribute to the gradients
        if isinstance(module, WindowAttention):
            torch.nn.init.normal_(module.to_out.weight, std=0.1)
    encoder = RRDBEncoder(num_features=8, num_blocks=2, growth_channels=4, upscale_factor=4)
    lr, x, t = torch.rand(2, 3, 4, 4) * 2 - 1, torch.randn(2, 3, 16, 16), torch.tensor([5, 60])

    def unet_loss():
        return unet(x, t, unet.condition(encoder(lr))).sample.square().mean()

    def encoder_loss():
        return encoder.upscale(lr).abs().mean()

    plain_unet, plain_encoder = _grads(unet, unet_loss), _grads(encoder, encoder_loss)
    unet.enable_gradient_checkpointing()
    encoder.enable_gradient_checkpointing()
    assert all(level.gradient_checkpointing for level in unet.down_levels)
    ckpt_unet, ckpt_encoder = _grads(unet, unet_loss), _grads(encoder, encoder_loss)
    assert plain_unet.keys() == ckpt_unet.keys() and plain_encoder.keys() == ckpt_encoder.keys()
    for name in plain_unet:
        torch.testing.assert_close(plain_unet[name], ckpt_unet[name], atol=1e-6, rtol=1e-5)
    for name in plain_encoder:
        torch.testing.assert_close(plain_encoder[name], ckpt_encoder[name], atol=1e-6, rtol=1e-5)


def test_bicubic_skip_adds_the_head_to_the_bicubic_upsample():
    from sradm_diffusers import imresize

    torch.manual_seed(0)
    plain = RRDBEncoder(num_features=8, num_blocks=2, growth_channels=4, upscale_factor=4)
    skip = RRDBEncoder(num_features=8, num_blocks=2, growth_channels=4, upscale_factor=4, bicubic_skip=True)
    skip.load_state_dict(plain.state_dict())
    lr = torch.rand(1, 3, 6, 5) * 2 - 1
    with torch.no_grad():
        # plain returns 2*head - 1; with the skip the same head output is added to the bicubic base.
        torch.testing.assert_close(skip.upscale(lr), imresize(lr, 4) + plain.upscale(lr) + 1, atol=1e-5, rtol=0)
        torch.testing.assert_close(skip(lr), plain(lr))  # conditioning features do not change
