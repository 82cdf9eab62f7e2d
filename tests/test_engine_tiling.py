import copy
import dataclasses
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_generator
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from spsr_cli.engine.device import resolve_device, resolve_dtype
from spsr_cli.engine.options import InferenceOptions, parse_bytes
from spsr_cli.engine.tiling import (
    MemoryBudgetError,
    Upscaler,
    auto_tile_size,
    cpu_auto_tile,
    patch_side,
    tile_grid,
    working_set_bytes,
)
from spsr_cli.errors import UsageError
from spsr_cli.model.spsr import SPSROutput


def psnr(a, b):
    mse = ((a - b) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


@pytest.fixture
def image():
    torch.manual_seed(1)
    return F.interpolate(torch.rand(1, 3, 18, 23), size=(70, 90), mode="bilinear", align_corners=False)


def test_tiled_matches_whole_image_with_default_overlap(tiny_model, image):
    whole = Upscaler(tiny_model, InferenceOptions(tile=0)).upscale(image)
    assert whole.shape == (1, 3, 280, 360)
    assert whole.std() > 0.02  # the model's output is not flat, so the comparison means something
    tiled = Upscaler(tiny_model, InferenceOptions(tile=24)).upscale(image)  # default overlap
    assert psnr(whole, tiled) > 50
    # without context the seams show: the test above depends on the overlap working
    seams = Upscaler(tiny_model, InferenceOptions(tile=24, tile_overlap=0)).upscale(image)
    assert psnr(whole, seams) < psnr(whole, tiled) - 10


def test_grid_covers_every_pixel_once():
    cover = torch.zeros(70, 90)
    for y0, y1, x0, x1 in tile_grid(70, 90, 24):
        cover[y0:y1, x0:x1] += 1
    assert torch.all(cover == 1)
    assert tile_grid(5, 5, None) == [(0, 5, 0, 5)]


def test_progress_reports_every_tile(tiny_model, image):
    calls = []
    Upscaler(tiny_model, InferenceOptions(tile=32)).upscale(image, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 9) for i in range(1, 10)]


def test_caller_model_is_not_modified(tiny_model, image):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    up = Upscaler(tiny_model, InferenceOptions(tile=0, device="cpu", precision="fp32"))
    up.upscale(image[:, :, :16, :16])
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


class Overflowing(torch.nn.Module):
    """Returns Inf in reduced precision, a finite image in float32."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.calls = []

    @property
    def config(self):
        return self.inner.config

    @property
    def scale(self):
        return self.inner.scale

    def forward(self, x):
        self.calls.append(x.dtype)
        out = self.inner(x)
        sr = out.sr if x.dtype == torch.float32 else out.sr + float("inf")
        return SPSROutput(sr, out.branch, out.grad_lr)


def test_non_finite_tile_is_recomputed_in_float32(tiny_model, image, caplog):
    up = Upscaler(tiny_model, InferenceOptions(tile=0, device="cpu", precision="bf16"))
    # a reduced-precision run that overflows (the torch backend holds the module it runs)
    up.backend.model, up.backend._fp32 = Overflowing(copy.deepcopy(tiny_model).to(torch.bfloat16)), None
    out = up.upscale(image[:, :, :12, :12])
    assert torch.isfinite(out).all()
    assert "recomputing it in float32" in caplog.text


def test_out_of_memory_halves_the_tile_and_retries(tiny_model, image, monkeypatch, caplog):
    up = Upscaler(tiny_model, InferenceOptions(tile=64))
    real = up._forward
    sizes = []

    def fake(patch):
        sizes.append(patch.shape[-1])
        if len(sizes) == 1:  # the first tile runs out of memory
            raise torch.OutOfMemoryError("fake OOM")
        return real(patch)

    monkeypatch.setattr(up, "_forward", fake)
    out = up.upscale(image)
    assert up.tile == 32
    assert out.shape == (1, 3, 280, 360)
    assert "retrying with --tile 32" in caplog.text
    reference = Upscaler(tiny_model, InferenceOptions(tile=32)).upscale(image)
    assert torch.equal(out, reference)


def test_auto_tile_is_bounded(tiny_model):
    tile = auto_tile_size(tiny_model, torch.device("cpu"), torch.float32, overlap=16)
    assert 32 <= tile <= 1024 and tile % 8 == 0


def test_cpu_auto_tile_is_smaller_in_float32(tiny_model):
    """On the CPU ``--tile auto`` caps the patch by the bytes it holds: 128-pixel tiles in bfloat16,
    96 in float32 (where a 512 x 340 photo with 128-pixel tiles took 1.74 GiB, README "CPU tiles")."""
    assert (cpu_auto_tile(2), cpu_auto_tile(4), cpu_auto_tile(8)) == (128, 96, 96)
    plans = {}
    for precision in ("bf16", "fp32"):
        up = Upscaler(tiny_model, InferenceOptions(device="cpu", precision=precision, backend="torch"))
        assert up.tile == cpu_auto_tile(up.itemsize)
        plans[precision] = patch_side(up.plan(340, 512).tile, up.overlap, up.align)
    assert plans["fp32"] <= 96 + 32 < plans["bf16"] <= 128 + 32


def test_device_and_precision_choices(monkeypatch):
    cpu = resolve_device("cpu")
    monkeypatch.setenv("SPSR_CPU_BF16", "0")
    assert resolve_dtype(cpu, None) == torch.float32
    monkeypatch.setenv("SPSR_CPU_BF16", "1")
    assert resolve_dtype(cpu, None) == torch.bfloat16  # the default where the CPU has bf16 units
    assert resolve_dtype(cpu, "fp32") == torch.float32 and resolve_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(UsageError, match="not used on CPU"):
        resolve_dtype(cpu, "fp16")
    with pytest.raises(UsageError, match="not understood"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("bad", [dict(tile_overlap=-1), dict(tile=-5)])
def test_bad_tiling_options(tiny_model, bad):
    with pytest.raises(UsageError):
        Upscaler(tiny_model, InferenceOptions(**bad))


# ---------------------------------------------------------------- precision, layout, batching


def test_bf16_on_cpu_runs_channels_last_and_stays_close_to_fp32(tiny_model, image):
    fp32 = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=0))
    bf16 = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="bf16", tile=0))
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    for up in (fp32, bf16):
        weight = up.model.conv_first.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    crop = image[:, :, :24, :24]
    assert psnr(fp32.upscale(crop), bf16.upscale(crop)) > 40


def test_batched_tiles_match_single_tiles(tiny_model, image):
    crop = image[:, :, :40, :44]
    single = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=16, tile_overlap=4))
    batched = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=16, tile_overlap=4))
    batched.max_batch = 4  # what CUDA does when several tiles fit; the logic is the same on CPU
    plan = batched.plan(40, 44)
    assert plan.batch == 4 and plan.tile == 16
    sizes = []
    real = batched._forward
    batched._forward = lambda patch: sizes.append(tuple(patch.shape)) or real(patch)
    calls = []
    out = batched.upscale(crop, progress=lambda d, t: calls.append(d))
    assert sizes == [(4, 3, 24, 24)] * 2 + [(1, 3, 24, 24)] and calls == list(range(1, 10))  # 9 tiles, one shape
    torch.testing.assert_close(out, single.upscale(crop), atol=1e-5, rtol=0)


def test_compile_option_wraps_the_prepared_model(tiny_model, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or model)
    up = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", compile=True))
    assert compiled == [up.model] and up.model is not tiny_model


def test_integer_output_is_the_rounded_float_output(tiny_model, image):
    up = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=16, tile_overlap=4))
    crop = image[:, :, :24, :30]
    rgb = crop[0].permute(1, 2, 0).numpy()
    reference = up.upscale(crop)[0].permute(1, 2, 0).numpy()
    for dtype, peak in ((np.uint8, 255), (np.uint16, 65535)):
        out = up.upscale_array(rgb, dtype=dtype)
        assert out.dtype == dtype and out.shape == (96, 120, 3)
        assert np.array_equal(out, np.rint(reference * peak).astype(dtype))


# ---------------------------------------------------------------- memory


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the CPU tensor storages that torch operators produce while active.

    Storages are counted once however many tensors view them, and released when the
    last of those tensors is freed (CPython frees at once: nothing here depends on time).
    """

    def __init__(self):
        super().__init__()
        self.refs, self.live, self.peak = {}, 0, 0

    def _release(self, key):
        count, nbytes = self.refs[key]
        if count == 1:
            del self.refs[key]
            self.live -= nbytes
        else:
            self.refs[key] = (count - 1, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                count, nbytes = self.refs.get(key, (0, storage.nbytes()))
                if count == 0:
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                self.refs[key] = (count + 1, nbytes)
                weakref.finalize(tensor, self._release, key)
        return out


def test_peak_tensor_memory_grows_with_the_tile_not_the_image():
    model = make_generator(nb=1)
    rng = np.random.default_rng(0)

    def peak(tile, height, width):
        up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=tile, tile_overlap=4))
        rgb = rng.random((height, width, 3), dtype=np.float32)
        with LiveBytes() as meter:
            out = up.upscale_array(rgb)  # uint8 output, filled tile by tile
        assert out.shape == (4 * height, 4 * width, 3)
        return meter.peak

    small, large, bigger_tile = peak(16, 48, 48), peak(16, 48, 96), peak(32, 96, 96)
    # 2.3x the output pixels: the only growth is the float32 input (the tensor view of the
    # H x W x 3 array counts once, 12 bytes per input pixel = 0.75 per output pixel)
    assert large - small <= 48 * 48 * 12 + 4096
    assert bigger_tile > 2 * small  # (32 + 8)^2 vs (16 + 8)^2 pixels per patch
    # the working-set formula that --tile auto and the memory check use bounds each, with < 60 % margin
    for tile, measured in ((16, small), (32, bigger_tile)):
        formula = working_set_bytes(model.config, (4 * (tile + 8)) ** 2, 4) - (8 << 20)
        assert measured <= formula <= 1.6 * measured


def test_memory_limit_picks_the_auto_tile_and_refuses_what_cannot_fit(tiny_model):
    roomy = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", memory_limit=parse_bytes("1G")))
    tight = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", memory_limit=parse_bytes("96M")))
    assert tight.plan(400, 400).tile < roomy.plan(400, 400).tile
    with pytest.raises(
        MemoryBudgetError,
        match=r"4000 x 3000 image \(output 16000 x 12000\).*output 0.54 GiB.*--max-memory allows 96 MiB; "
        r"the output alone.*--max-memory",
    ):
        tight.plan(3000, 4000)
    with pytest.raises(MemoryBudgetError, match=r"even 32-pixel tiles do not fit"):
        tight.plan(1200, 1200)  # output 66 MiB, and 52 MiB for the smallest tiles
    fixed = Upscaler(
        tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=512, memory_limit=parse_bytes("256M"))
    )
    with pytest.raises(
        MemoryBudgetError,
        match=r"512-pixel tiles needs about 3.02 GiB .*allows 0.25 GiB; use --tile \d+ or raise --max-memory",
    ):
        fixed.plan(1000, 1000)


def test_cpu_allocation_failure_becomes_a_memory_error(tiny_model, image, monkeypatch):
    up = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=64))

    def fail(patch):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 1 bytes"
        )

    monkeypatch.setattr(up, "_forward", fail)
    with pytest.raises(MemoryBudgetError, match="out of memory on cpu even with 32-pixel tiles"):
        up.upscale(image)
    monkeypatch.setattr(up, "_forward", lambda patch: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not mistaken for memory
        up.upscale(image)


@pytest.mark.parametrize("text, value", [("8G", 8 << 30), ("512MiB", 512 << 20), ("1.5 GB", 3 << 29), ("1000", 1000)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_parse_bytes_refuses_nonsense():
    with pytest.raises(UsageError, match="not understood"):
        parse_bytes("lots")


def test_a_huge_tile_overlap_is_clamped_to_the_receptive_radius_with_a_warning(tiny_model, caplog):
    radius = tiny_model.config.receptive_radius
    image = torch.rand(1, 3, 20, 24)
    with caplog.at_level("WARNING", logger="spsr_cli"):
        huge = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=8, tile_overlap=10000))
    assert huge.overlap == radius
    assert "--tile-overlap 10000" in caplog.text and str(radius) in caplog.text
    exact = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=8, tile_overlap=radius))
    assert torch.equal(huge.upscale(image), exact.upscale(image))  # the clamp changes nothing in the result
    assert Upscaler(tiny_model, InferenceOptions(device="cpu", tile=8, tile_overlap=16)).overlap == 16


# ---------------------------------------------------------------- every architecture


def _rrdbnet(**config):
    from spsr_cli.model.rrdbnet import RRDBNet, RRDBNetConfig

    torch.manual_seed(3)
    return RRDBNet(config=RRDBNetConfig(**{"nf": 8, "nb": 1, "gc": 4, **config})).eval()


@pytest.mark.parametrize("config", [{}, {"scale": 2, "unshuffle": 2}], ids=["x4", "x2-unshuffle"])
def test_rrdbnet_tiles_plan_and_run_like_spsr(config, image, one_thread):
    model = _rrdbnet(**config)
    s = model.scale
    whole = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=0)).upscale(image)
    assert whole.shape == (1, 3, 70 * s, 90 * s)
    with torch.no_grad():
        assert torch.allclose(whole, model(image).clamp(0, 1), atol=1e-6)
    radius = model.config.receptive_radius
    huge = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=24, tile_overlap=10000))
    assert huge.overlap == radius  # clamped to the architecture's own radius
    tiled = huge.upscale(image)
    # context of a full receptive radius: the whole-image result (to float32 rounding: oneDNN picks
    # its convolution kernels by input size on some CPUs, e.g. AVX2-only ones); the unshuffling x2
    # model's tiles start on its 2 x 2 grid (tile_align), so they fold the whole image's blocks
    assert (tiled - whole).abs().max() < 1e-5
    roomy = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", memory_limit=parse_bytes("1G")))
    # a limit tight enough to bind below the CPU's own cap (CPU_AUTO_TILE)
    limit = parse_bytes("48M" if s == 4 else "20M")
    tight = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", memory_limit=limit))
    assert tight.plan(400, 400).tile < roomy.plan(400, 400).tile  # --tile auto from this architecture's formula


def test_rrdbnet_peak_memory_stays_under_its_formula(one_thread):
    """The working-set formula (RRDBNetConfig.work_channels) bounds the measured peak, with < 70 % margin."""
    rng = np.random.default_rng(0)
    for config in ({}, {"scale": 2, "unshuffle": 2}):
        model = _rrdbnet(nf=16, gc=8, **config)
        s = model.scale
        for tile in (16, 32):
            up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=tile, tile_overlap=4))
            rgb = rng.random((64, 64, 3), dtype=np.float32)
            with LiveBytes() as meter:
                up.upscale_array(rgb)
            formula = working_set_bytes(model.config, (s * (tile + 8)) ** 2, 4) - (8 << 20)
            assert meter.peak <= formula <= 1.7 * meter.peak, (config, tile)


def _srvgg(**config):
    from spsr_cli.model.srvgg import SRVGGConfig, SRVGGNetCompact

    torch.manual_seed(3)
    return SRVGGNetCompact(config=SRVGGConfig(**{"nf": 8, "num_conv": 3, **config})).eval()


def _dat(**config):
    from spsr_cli.model.dat import DAT, DATConfig

    torch.manual_seed(3)
    tiny = {"nf": 16, "depth": 4, "heads": 2, "ffn_channels": 16, "window_short": 4, "window_long": 8}
    return DAT(config=DATConfig(**{**tiny, **config})).eval()


@pytest.mark.parametrize("scale", [4, 3])
def test_srvgg_tiles_equal_the_whole_image(scale, image, one_thread):
    model = _srvgg(scale=scale)
    whole = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=0)).upscale(image)
    assert whole.shape == (1, 3, 70 * scale, 90 * scale) and whole.std() > 0.02
    exact = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=24, tile_overlap=10000))
    assert exact.overlap == model.config.receptive_radius == 5  # clamped to its exact radius
    assert (exact.upscale(image) - whole).abs().max() < 1e-5
    default = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=24))
    assert default.overlap == 5 and (default.upscale(image) - whole).abs().max() < 1e-5  # its own context: exact
    short = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=24, tile_overlap=2)).upscale(image)
    assert (short - whole).abs().max() > 1e-3  # less context than the radius shows at the seams


@pytest.mark.parametrize(
    "size, tile, overlap, align", [(70, 24, 4, 8), (90, 32, 0, 32), (64, 16, 5, 1), (10, 24, 4, 8)]
)
def test_patches_hold_their_core_with_context_and_start_on_the_grid(size, tile, overlap, align):
    from spsr_cli.engine.tiling import patch_side, patch_span

    side = min(size, patch_side(tile, overlap, align))
    for start, stop, _, _ in tile_grid(size, size, tile):
        p0, p1 = patch_span(start, stop, size, side, overlap, align)
        assert 0 <= p0 <= max(0, start - overlap) and min(size, stop + overlap) <= p1 <= size
        assert p1 - p0 == side or (align > 1 and p1 == size)  # one shape, but for the grid's last patch
        assert p0 % align == 0


def test_dat_tiles_start_on_its_window_grid(image, one_thread):
    """DAT's channel attention and pooled gates see the whole input, so tiles cannot be exact; patches on
    the window grid see the whole image's windows, which keeps them far closer than patches anywhere."""
    model = _dat()
    assert model.config.tile_align == 8
    options = InferenceOptions(device="cpu", precision="fp32", tile=0)
    whole = Upscaler(model, options).upscale(image)
    assert whole.shape == (1, 3, 280, 360) and whole.std() > 0.02
    tiles = dataclasses.replace(options, tile=32, tile_overlap=8)
    aligned = Upscaler(model, tiles)
    on_grid = aligned.upscale(image)
    anywhere = Upscaler(model, tiles)
    anywhere.align = 1
    assert psnr(on_grid, whole) > 40 and psnr(on_grid, whole) > psnr(anywhere.upscale(image), whole) + 3
    single = Upscaler(model, dataclasses.replace(options, tile=96)).upscale(image)
    assert (single - whole).abs().max() < 1e-5  # one tile is the whole image


def test_new_architectures_peak_memory_stays_under_their_formula(one_thread):
    """SRVGGConfig/DATConfig.work_channels bound the measured peak, with < 70 % margin."""
    from spsr_cli.engine.tiling import patch_side

    rng = np.random.default_rng(0)
    for model in (_srvgg(nf=16), _srvgg(nf=16, scale=2), _dat(), _dat(scale=2), _dat(window_long=16)):
        s = model.scale
        for tile in (17, 33):  # DAT: patches of 32 and 48 (whole 8 x 4 windows; padded to 64 with 16 x 4 ones)
            up = Upscaler(model, InferenceOptions(device="cpu", precision="fp32", tile=tile, tile_overlap=4))
            rgb = rng.random((64, 64, 3), dtype=np.float32)
            with LiveBytes() as meter:
                up.upscale_array(rgb)
            side = min(64, patch_side(tile, 4, up.align))
            formula = working_set_bytes(model.config, (s * side) ** 2, 4) - (8 << 20)
            assert meter.peak <= formula <= 1.7 * meter.peak, (model.config, tile)


def test_without_tile_overlap_each_architecture_gets_its_own_context(tiny_model):
    options = InferenceOptions(device="cpu", tile=64)
    assert Upscaler(tiny_model, options).overlap == 16  # SPSR and RRDBNet: as before
    assert Upscaler(_srvgg(num_conv=7), options).overlap == 9  # the exact receptive radius
    assert Upscaler(_dat(), options).overlap == 8  # window_long: DAT's measured local reach
    assert Upscaler(_dat(), dataclasses.replace(options, tile_overlap=3)).overlap == 3  # the user's word wins


def test_auto_tile_of_a_grid_aligned_network_keeps_its_patch_within_the_budget():
    from spsr_cli.engine.tiling import patch_side

    model = _dat()
    for budget in (64 << 20, 256 << 20, 1 << 30):
        tile = auto_tile_size(model, torch.device("cpu"), torch.float32, 8, budget=budget)
        side = patch_side(tile, 8, model.config.tile_align)
        assert working_set_bytes(model.config, (model.scale * side) ** 2, 4) <= budget
