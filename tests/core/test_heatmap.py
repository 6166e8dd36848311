import torch

from difftrack_pack.ditcorr import colorize, render_heatmaps


def test_colorize_is_dark_to_bright():
    ramp = colorize(torch.linspace(0, 1, 11))
    brightness = ramp.sum(-1)
    assert ramp.shape == (11, 3)
    assert torch.all(brightness[1:] >= brightness[:-1])
    assert ramp[0].sum() < 0.1 and ramp[-1].sum() > 2.5


def test_render_scales_each_map_to_its_peak_and_blends():
    maps = torch.zeros(2, 3, 4)
    maps[0, 1, 2] = 5.0
    maps[1, 0, 0] = 0.001
    out = render_heatmaps(maps, (30, 40))
    assert out.shape == (2, 30, 40, 3)
    # a strong and a faint peak are both drawn near full brightness (upsampling blurs an interior peak a little)
    assert out[0].amax() > 0.95 and out[1].amax() > 0.95
    frames = torch.full((2, 30, 40, 3), 0.5)
    blended = render_heatmaps(maps, (30, 40), frames, opacity=0.0)
    assert torch.equal(blended, frames)
