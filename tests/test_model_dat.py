"""DAT (DAT-light): typed config, shapes at x2/x3/x4 and any size, the published key names and shapes,
the shifted-window schedule and masks, cost, traceability."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spsr_cli.model.dat import DAT, MASKED, DATConfig, is_shifted, relative_offsets, relative_pair_index, shift_mask

#: Two groups (both shift schedules), a 3conv residual, small windows: fast.
TINY = DATConfig(nf=16, groups=2, depth=4, heads=2, ffn_channels=16, window_short=4, window_long=8)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(13, 7), (16, 24)], ids=["odd", "whole-windows"])
def test_output_is_scale_times_any_input_size(scale: int, size: tuple[int, int], one_thread) -> None:
    config = DATConfig(**{**TINY.to_dict(), "scale": scale, "residual_convs": 1 if scale == 3 else 3})
    model = DAT(config=config).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, size[0] * scale, size[1] * scale) and torch.isfinite(out).all()


def test_dat_light_has_the_published_keys_and_shapes() -> None:
    state = DAT(config=DATConfig()).state_dict()
    # the published DAT_light_x4.pth holds 1063 tensors: these 965, 18 x 2 x 2 derived position tables,
    # 4 x 2 shift masks and 54 batch-norm counters (derived or unused: never loaded)
    assert len(state) == 965
    shapes = {
        "conv_first.weight": (60, 3, 3, 3),
        "norm_in.weight": (60,),  # published: before_RG.1.weight
        "layers.0.blocks.0.attn.qkv.weight": (180, 60),
        "layers.0.blocks.0.attn.attns.1.pos.pos_proj.weight": (1, 2),
        "layers.0.blocks.0.attn.attns.1.pos.pos3.2.weight": (3, 1),
        "layers.0.blocks.0.attn.channel_interaction.1.weight": (7, 60, 1, 1),
        "layers.0.blocks.0.attn.spatial_interaction.1.running_var": (3,),
        "layers.0.blocks.1.attn.temperature": (6, 1, 1),
        "layers.0.blocks.17.ffn.sg.conv.weight": (60, 1, 3, 3),
        "layers.0.blocks.17.ffn.fc2.weight": (60, 60),
        "layers.0.conv.2.weight": (15, 15, 1, 1),
        "conv_after_body.4.weight": (60, 15, 3, 3),
        "upsample.0.weight": (48, 60, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.endswith(("num_batches_tracked", "rpe_biases", "relative_position_index")) for k in state)
    params = sum(p.numel() for p in DAT(config=DATConfig()).parameters())
    assert 570_000 < params < 575_000  # the paper: 573 K


def test_shift_schedule() -> None:
    # DAT: every other spatial block shifts; even groups from block 2, odd groups from block 0
    assert [b for b in range(18) if is_shifted(0, b)] == [2, 6, 10, 14]
    assert [b for b in range(18) if is_shifted(1, b)] == [0, 4, 8, 12, 16]
    model = DAT(config=TINY)
    assert [[blk.attn.shifted for blk in g.blocks[::2]] for g in model.layers] == [[False, True], [True, False]]


def _regions_by_slices(height: int, width: int, window: tuple[int, int]) -> torch.Tensor:
    """Swin's construction: label the three bands the half-window shift wraps, per axis."""
    labels = torch.zeros(height, width)
    count = 0
    for hs in (slice(0, -window[0]), slice(-window[0], -(window[0] // 2)), slice(-(window[0] // 2), None)):
        for ws in (slice(0, -window[1]), slice(-window[1], -(window[1] // 2)), slice(-(window[1] // 2), None)):
            labels[hs, ws] = count
            count += 1
    return labels


@pytest.mark.parametrize("window", [(4, 8), (8, 4), (8, 32)])
def test_shift_mask_separates_the_wrapped_regions(window: tuple[int, int]) -> None:
    height, width = 2 * max(window), 3 * max(window)
    mask = shift_mask(height, width, window, torch.device("cpu"))
    wh, ww = window
    labels = _regions_by_slices(height, width, window)
    windows = labels.reshape(height // wh, wh, width // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    expected = (windows[:, None, :] != windows[:, :, None]).float() * MASKED
    assert mask.shape == (height * width // (wh * ww), wh * ww, wh * ww) and torch.equal(mask, expected)
    assert (mask[0] == 0).all()  # windows away from the wrapped border attend freely


def test_relative_position_tables() -> None:
    offsets, index = relative_offsets((2, 3)), relative_pair_index((2, 3))
    assert offsets.shape == (3 * 5, 2) and index.shape == (6, 6)
    ys, xs = torch.meshgrid(torch.arange(2), torch.arange(3), indexing="ij")
    coords = torch.stack((ys.flatten(), xs.flatten()), 1).float()
    assert torch.equal(offsets[index], coords[:, None, :] - coords[None, :, :])  # row i, col j: token i - token j


def test_config_round_trips_and_refuses_bad_values() -> None:
    assert DATConfig.from_dict(TINY.to_dict()) == TINY and TINY.architecture == "dat"
    assert DATConfig().window_multiple == 32 and DATConfig(window_short=6, window_long=8).window_multiple == 24
    for bad, message in [
        ({"heads": 3}, "heads .* must be even"),
        ({"nf": 8, "heads": 2}, "at least 16"),
        ({"residual_convs": 2}, "residual_convs must be 1 or 3"),
        ({"out_channels": 1}, "in_channels 3 != out_channels 1"),
        ({"ffn_channels": 15}, "ffn_channels must be even"),
        ({"window_short": 64, "window_long": 32}, "2048 tokens, more than 1024"),
    ]:
        with pytest.raises(ValueError, match=message):
            DATConfig(**bad)
    with pytest.raises(ValueError, match="unknown DATConfig fields"):
        DATConfig.from_dict({"upsampler": 1})
    with pytest.raises(TypeError):
        DAT(DATConfig())  # type: ignore[misc]  # keyword-only


def test_macs_per_input_pixel_counts_convolutions_linears_and_attention(one_thread) -> None:
    model = DAT(config=TINY).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    # the rest is per image, not per pixel: the position-bias MLPs and the pooled channel gates
    assert TINY.macs_per_input_pixel * 32 * 32 == pytest.approx(counter.get_total_flops() / 2, rel=0.01)


def test_dat_light_x4_cost_per_output_megapixel() -> None:
    # about 52 GMAC per output megapixel: less compute than SRVGGNetCompact (76), but attention runs slower per MAC
    assert DATConfig().macs_per_input_pixel / 16 * 1e6 == pytest.approx(51.9e9, rel=0.01)


@pytest.mark.slow
def test_exports_as_one_graph(one_thread) -> None:
    """torch.export (what ONNX export traces with) takes the whole forward: no data-dependent control flow."""
    model = DAT(config=DATConfig(**{**TINY.to_dict(), "groups": 1, "depth": 2})).eval()
    x = torch.rand(1, 3, 12, 20)  # padded windows, one shifted block
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-6)
