"""Ship a generator as the packaged default, and decide whether a new one is better.

Maintainer tooling (not part of the installed package; it writes into the source tree).
``scripts/improve_default.py`` drives it:

* :func:`score_generator` puts a weights file on the Set5/Set14 benchmarks with the
  ``spsr eval`` code (spsr-paper protocol, float32);
* :func:`is_improvement` is the shipping rule on the benchmarks: Set14 LPIPS must go down
  while Set14 PSNR drops by at most 0.10 dB against the numbers recorded for the shipped
  model; :func:`validation_improves` is its other half, on the held-out training photographs;
* :func:`interpolate_generator` blends the shipped generator with a trained one (network
  interpolation) and :func:`choose_alpha` picks the blend on the validation crops;
* :func:`branch_share` measures how much the gradient branch changes the output;
* :func:`update_curve` grows the learning curve (``training_curve.jsonl`` + the card's table);
* :func:`bundle_default` copies the file into ``spsr_cli/weights/bundled/``, writes its
  ``weights_manifest.json`` entry (sha256, size, version, metrics, training summary) as
  the default, and refreshes the metrics table of ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from spsr_cli.errors import UsageError
from spsr_cli.files import atomic_path, sha256_file, write_json_atomic, write_text_atomic
from spsr_cli.weights.manifest import read_manifest_file, validate_name
from spsr_cli.weights.store import read_weights_file

if TYPE_CHECKING:
    import torch

BUNDLED_DIR = Path("spsr_cli") / "weights" / "bundled"
MANIFEST_FILE = "weights_manifest.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
CARD_START, CARD_END = "<!-- metrics:start -->", "<!-- metrics:end -->"
TRAINING_START, TRAINING_END = "<!-- training:start -->", "<!-- training:end -->"
CURVE_START, CURVE_END = "<!-- curve:start -->", "<!-- curve:end -->"
STATUS_START, STATUS_END = "<!-- status:start -->", "<!-- status:end -->"
CURVE_FILE = "training_curve.jsonl"
#: The shipping rule's tolerance on Set14 PSNR (dB).
MAX_PSNR_DROP = 0.10
#: Reference rows for the model card (spsr-paper protocol; Set5 paper values from the CVPR paper's table).
PAPER_ROWS = {
    "bicubic (paper)": {"Set5": (28.420, 0.3407), "Set14": (26.100, 0.4393)},
    "ESRGAN (paper)": {"Set14": (26.28, 0.1329)},
    "SPSR-G (paper)": {"Set14": (26.64, 0.1318)},
    "SPSR-P (TPAMI)": {"Set14": (27.07, 0.1257)},
}


def score_generator(
    weights: str | Path,
    bench_root: Path,
    *,
    sets: tuple[str, ...] = ("Set5", "Set14"),
    precision: str = "fp32",
    device: str = "cpu",
    tile: int | str = 0,
) -> dict[str, dict[str, float]]:
    """Mean PSNR / SSIM / LPIPS of a model (file, registry name or ``bicubic``) on benchmark folders.

    Every version is scored the same way: torch (not a converted OpenVINO network), float32, each
    image whole (``tile`` 0; Set5/Set14 inputs are at most 180 x 144, as the earlier ``--tile auto``
    ran them), so versions compare like with like.

    ``bench_root/NAME/HR`` and ``bench_root/NAME/LR_bicubic_X4`` for each set (the layout of
    the project's shared data). Returns ``{set: {"psnr", "ssim", "lpips"}}``.
    """
    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.eval.datasets import local_source
    from spsr_cli.eval.runner import evaluate

    scores = {}
    options = InferenceOptions(device=device, precision=precision, tile=tile, backend="torch")
    for name in sets:
        hr, lr = bench_root / name / "HR", bench_root / name / "LR_bicubic_X4"
        if not hr.is_dir():
            raise UsageError(
                f"benchmark folder {hr} does not exist; pass --bench DIR holding {name}/HR and {name}/LR_bicubic_X4"
            )
        result = evaluate(local_source(hr, lr if lr.is_dir() else None), model=str(weights), options=options)
        means = result.means
        if means.get("lpips") is None:
            raise UsageError(f"LPIPS could not be computed ({result.lpips_note}); the shipping rule needs it")
        scores[name] = {k: round(float(v), 5) for k, v in means.items() if k in ("psnr", "ssim", "lpips")}
    return scores


def is_improvement(
    candidate: Mapping[str, Mapping[str, float]],
    current: Mapping[str, Mapping[str, float]] | None,
    *,
    on: str = "Set14",
    max_psnr_drop: float = MAX_PSNR_DROP,
) -> tuple[bool, str]:
    """The shipping rule: ``on``'s LPIPS strictly lower and its PSNR at most ``max_psnr_drop`` dB lower.

    With no recorded numbers for the current model (``None``), anything scored is an improvement.
    Returns (decision, a sentence saying why).
    """
    if current is None or on not in current:
        return True, "no recorded scores for the shipped model"
    new, old = candidate[on], current[on]
    d_lpips, d_psnr = new["lpips"] - old["lpips"], new["psnr"] - old["psnr"]
    why = f"{on} LPIPS {old['lpips']:.4f} -> {new['lpips']:.4f}, PSNR {old['psnr']:.3f} -> {new['psnr']:.3f} dB"
    if d_lpips >= 0:
        return False, f"{why}: LPIPS did not improve"
    if d_psnr < -max_psnr_drop:
        return False, f"{why}: PSNR dropped by more than {max_psnr_drop} dB"
    return True, why


def validation_improves(
    candidate: Mapping[str, float] | None,
    baseline: Mapping[str, float] | None,
    *,
    min_gain: float = 0.0,
    max_psnr_drop: float = float("inf"),
) -> tuple[bool, str]:
    """The rule's other half, on the held-out training photographs: validation LPIPS lower than the
    shipped model's on the same crops by more than ``min_gain`` (the measured noise) and validation
    PSNR at most ``max_psnr_drop`` dB under it. Returns (decision, why)."""
    if not candidate or not baseline or candidate.get("lpips") is None or baseline.get("lpips") is None:
        return False, "no validation LPIPS for the candidate or the shipped model"
    why = (
        f"validation LPIPS {baseline['lpips']:.4f} -> {candidate['lpips']:.4f}, "
        f"PSNR {baseline['psnr']:.3f} -> {candidate['psnr']:.3f} dB"
    )
    gain = baseline["lpips"] - candidate["lpips"]
    if gain <= 0 or gain < min_gain:
        return False, f"{why}: validation LPIPS gain {gain:.4f} is not above the noise ({min_gain:.4f})"
    if candidate["psnr"] < baseline["psnr"] - max_psnr_drop:
        return False, f"{why}: validation PSNR dropped by more than {max_psnr_drop} dB"
    return True, why


def interpolate_generator(
    base: Mapping[str, torch.Tensor],
    tuned: Mapping[str, torch.Tensor],
    alpha: float,
    *,
    tuned_parts: tuple[str, ...] = ("branch",),
) -> dict[str, torch.Tensor]:
    """Network interpolation (ESRGAN, Wang et al. 2018) between two SPSR generators of one config.

    Every tensor becomes ``base + alpha * (tuned - base)`` in float32, except those of the
    generator parts named in ``tuned_parts`` (see :func:`spsr_cli.model.spsr.part_of`), which are
    taken from ``tuned`` whole: v1's gradient branch is an untrained initialisation its fusion
    ignores, so blending it with the trained branch would only blur what the branch learned.
    ``alpha`` 0 gives ``base``'s output (the base's fusion ignores the branch), 1 gives ``tuned``.
    """
    import torch

    from spsr_cli.model.spsr import part_of

    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"interpolation weight {alpha} is outside [0, 1]")
    if base.keys() != tuned.keys():
        missing, extra = sorted(set(tuned) - set(base)), sorted(set(base) - set(tuned))
        raise UsageError(f"the generators differ in their keys: only in tuned {missing[:5]}, only in base {extra[:5]}")
    out = {}
    for key, t in tuned.items():
        b = base[key]
        if b.shape != t.shape:
            raise UsageError(f"{key}: shape {tuple(b.shape)} in base, {tuple(t.shape)} in tuned")
        if part_of(key) in tuned_parts or not t.is_floating_point():
            out[key] = t.detach().to(torch.float32).clone()
        else:
            out[key] = torch.lerp(b.detach().to(torch.float32), t.detach().to(torch.float32), float(alpha))
    return out


def choose_alpha(rows: list[Mapping[str, float]], psnr_floor: float) -> Mapping[str, float] | None:
    """The interpolation to ship: of ``rows`` (each ``alpha``, ``psnr``, ``lpips`` on the validation
    crops), the one with the lowest LPIPS among those at or above ``psnr_floor``; None if none is."""
    eligible = [r for r in rows if r.get("lpips") is not None and r["psnr"] >= psnr_floor]
    return min(eligible, key=lambda r: (r["lpips"], -r["alpha"])) if eligible else None


def branch_share(
    weights: str | Path, bench_root: Path, *, name: str = "Set14", device: str = "cpu"
) -> dict[str, float]:
    """How much the gradient branch changes the output of a generator on a benchmark set.

    Every LR image of ``bench_root/NAME/LR_bicubic_X4`` is upscaled twice in float32, once as
    is and once with the gradient branch's features zeroed before the fusion; returns the mean
    and the lowest per-image RGB PSNR (uint8 outputs, peak 255) between the two. ``inf`` means
    the branch does not reach the output at all (as in v1, whose fusion ignores it).
    """
    import math

    import numpy as np
    import torch

    from spsr_cli.engine.options import InferenceOptions
    from spsr_cli.eval.datasets import list_images, read_rgb
    from spsr_cli.eval.metrics import psnr
    from spsr_cli.eval.runner import module_upscaler
    from spsr_cli.weights.loader import load_generator

    model = load_generator(str(weights))
    options = InferenceOptions(device=device, precision="fp32", tile=0)  # whole images, as score_generator
    upscale, _ = module_upscaler(model, options)
    # the engine works on its own copy of the module, hooks included: zero the features in a second one
    model.branch.register_forward_hook(lambda module, inputs, out: (torch.zeros_like(out[0]), out[1]))
    upscale_zeroed, _ = module_upscaler(model, options)
    values = []
    for path in list_images(bench_root / name / "LR_bicubic_X4"):
        lr = read_rgb(path)
        values.append(psnr(upscale(lr).astype(np.float64), upscale_zeroed(lr).astype(np.float64)))
    finite = [v for v in values if math.isfinite(v)]
    return {
        "set": name,
        "images": len(values),
        "mean_psnr": float(np.mean(values)) if len(finite) == len(values) else math.inf,
        "min_psnr": float(min(values)),
    }


def update_curve(repo: Path, rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Append validation rows (keys ``round``, ``stage``, ``step``, ``total_steps``, metrics) to the
    repository's learning curve, skipping rows already there, and redraw the card's curve table."""
    path = repo / CURVE_FILE
    curve = (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.is_file()
        else []
    )
    seen = {(r["round"], r["stage"], r["step"]) for r in curve}
    curve += [dict(r) for r in rows if (r["round"], r["stage"], r["step"]) not in seen]
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in curve))
    card = repo / MODEL_CARD_FILE
    if card.is_file() and CURVE_START in card.read_text(encoding="utf-8"):
        write_text_atomic(
            card, _replace_between(card.read_text(encoding="utf-8"), CURVE_START, CURVE_END, curve_table(curve))
        )
    return curve


def curve_table(curve: list[Mapping[str, Any]]) -> str:
    """Markdown table of the learning curve (validation on the held-out training photographs)."""
    lines = [
        "| round | stage | step | total steps | val PSNR | val SSIM | val LPIPS | branch L1 (bicubic) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in curve:
        lpips = "-" if r.get("lpips") is None else f"{r['lpips']:.4f}"
        branch = "-" if r.get("branch_l1") is None else f"{r['branch_l1']:.4f} ({r['bicubic_branch_l1']:.4f})"
        lines.append(
            f"| {r['round']} | {r['stage']} | {r['step']} | {r['total_steps']} | {r['psnr']:.3f} | "
            f"{r['ssim']:.4f} | {lpips} | {branch} |"
        )
    return "\n".join(lines)


def current_entry(repo: Path, name: str) -> dict[str, Any] | None:
    """The packaged manifest entry of ``name`` in the source tree ``repo`` (None if absent)."""
    data = read_manifest_file(repo / MANIFEST_FILE)
    return next((m for m in data.get("models", []) if m.get("name") == name), None)


def bundle_default(
    weights: Path,
    *,
    repo: Path,
    name: str = "spsr-x4",
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
    licence: str,
    description: str,
    make_default: bool = True,
) -> dict[str, Any]:
    """Ship ``weights`` inside the package under ``name`` (see the module docstring).

    The file is checked strictly (config from its metadata) before anything changes; the
    entry's ``version`` is one more than the shipped one's. Returns the new manifest entry.
    """
    validate_name(name)
    loaded = read_weights_file(Path(weights))  # strict: refuses files that do not match their config
    previous = current_entry(repo, name)
    version = int(previous.get("version", 0)) + 1 if previous else 1
    target = repo / BUNDLED_DIR / f"{name}.safetensors"
    with atomic_path(target) as tmp:
        shutil.copyfile(weights, tmp)
    entry = {
        "name": name,
        "architecture": "spsr",
        "version": version,
        "config": loaded.config.to_dict(),
        "scale": loaded.config.scale,
        "licence": licence,
        "provenance": loaded.metadata.get("source", ""),
        "description": description,
        "sha256": sha256_file(target),
        "size": target.stat().st_size,
        "source": {"type": "bundled", "path": str(target.relative_to(repo / "spsr_cli"))},
        "metrics": dict(metrics),
        "training": dict(training),
    }
    # what the model grew from, what it is for and its measured speed (the architecture's, not the weights') carry over
    for key in ("base_model", "good_for", "seconds_per_megapixel"):
        if previous and previous.get(key):
            entry[key] = previous[key]
    manifest_path = repo / MANIFEST_FILE
    data = read_manifest_file(manifest_path)
    models = list(data.get("models", []))
    names = [m.get("name") for m in models]
    if name in names:  # the new version takes the old one's place in the list
        models[names.index(name)] = entry
    else:
        models.append(entry)
    data["models"] = models
    if make_default:
        data["default"] = name
    write_json_atomic(manifest_path, data)
    card = repo / MODEL_CARD_FILE
    if card.is_file():
        write_text_atomic(card, refresh_card(card.read_text(encoding="utf-8"), entry))
    return entry


def metrics_table(entry: Mapping[str, Any]) -> str:
    """Markdown table: the shipped model's recorded scores beside the reference rows."""
    lines = ["| model | Set5 PSNR | Set5 LPIPS | Set14 PSNR | Set14 LPIPS |", "|---|---|---|---|---|"]

    def cell(row: Mapping[str, Any] | None, key: str, digits: int) -> str:
        return "-" if not row or row.get(key) is None else f"{row[key]:.{digits}f}"

    rows: list[tuple[str, Mapping[str, Any]]] = [
        (f"**{entry['name']} v{entry['version']}** (this model)", entry.get("metrics", {}))
    ]
    rows += [(label, scores) for label, scores in (entry.get("training", {}).get("reference_scores") or {}).items()]
    for label, row in rows:
        lines.append(
            f"| {label} | {cell(row.get('Set5'), 'psnr', 2)} | {cell(row.get('Set5'), 'lpips', 4)} | "
            f"{cell(row.get('Set14'), 'psnr', 2)} | {cell(row.get('Set14'), 'lpips', 4)} |"
        )
    for label, sets in PAPER_ROWS.items():
        s5, s14 = sets.get("Set5"), sets.get("Set14")
        lines.append(
            f"| {label} | {f'{s5[0]:.2f}' if s5 else '-'} | {f'{s5[1]:.4f}' if s5 else '-'} | "
            f"{f'{s14[0]:.2f}' if s14 else '-'} | {f'{s14[1]:.4f}' if s14 else '-'} |"
        )
    return "\n".join(lines)


def training_section(entry: Mapping[str, Any]) -> str:
    """Markdown list of how this version was made (the entry's ``training`` record)."""
    training = entry.get("training", {})
    lines = [f"### Training of this version (v{entry['version']})", ""]
    for key, value in training.items():
        if key in ("reference_scores",):
            continue
        if isinstance(value, Mapping):
            value = ", ".join(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in value.items())
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    return "\n".join(lines)


def _replace_between(text: str, start: str, end: str, content: str) -> str:
    if start not in text or end not in text:
        raise UsageError(f"{MODEL_CARD_FILE} lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"


def status_section(entry: Mapping[str, Any]) -> str:
    """What ships, plainly: for a trained version, what was trained, on what, and what the branch does."""
    training = entry.get("training", {})
    this = training.get("this_round", {})
    share = this.get("branch_share_set14")
    share_text = (
        f"PSNR {share['mean_psnr']:.2f} dB (lowest {share['min_psnr']:.2f}) between the output and the "
        f"output with the branch's features zeroed, on Set14"
        if share
        else "not measured"
    )
    if this.get("init") and not this.get("lr_parts"):  # shipped as trained elsewhere (--init), this round kept it
        trained = (
            f"`base_model` (RealSR DF2K), then {this['init']}: the whole network (trunk included) trained further "
            "by this project (see the rounds below), "
        )
    elif this.get("lr_parts"):  # stage W: the whole network
        parts = ", ".join(f"{part} {factor:g}" for part, factor in this["lr_parts"].items())
        trained = (
            f"`base_model` (RealSR DF2K), then the whole network (trunk included) trained further by this "
            f"project with the recipe below (learning-rate factors {parts}; this round: {this.get('hardware')}), "
        )
    else:
        trained = (
            "`base_model` (RealSR DF2K) with its trunk frozen; the gradient branch and the fusion block "
            "trained by this project with the recipe below, "
        )
    return (
        f"**What ships today (v{entry['version']}), plainly:** {trained}"
        f"{training.get('total_steps', training.get('steps', 0))} training steps in all, on BSDS500 + T91 "
        f"(held-out split excluded). The gradient branch changes the output: {share_text}. "
        f"Cost: 52.4 M multiply-accumulates per input pixel, about 3x the plain RRDBNet's 18 M."
    )


def refresh_card(text: str, entry: Mapping[str, Any]) -> str:
    """Replace the text between the card's markers with :func:`metrics_table` and
    :func:`training_section`, and the front matter's ``model-index`` values with the entry's numbers."""
    text = _replace_between(text, CARD_START, CARD_END, metrics_table(entry))
    if STATUS_START in text and int(entry.get("training", {}).get("steps", 0)) > 0:
        text = _replace_between(text, STATUS_START, STATUS_END, status_section(entry))
    if TRAINING_START in text:
        text = _replace_between(text, TRAINING_START, TRAINING_END, training_section(entry))
    for dataset, scores in entry.get("metrics", {}).items():
        for metric in ("psnr", "lpips", "ssim"):
            if metric in scores:  # lines written as "value: X  # Set14 psnr"
                text = re.sub(rf"(value: )[-0-9.]+(\s+# {dataset} {metric}\b)", rf"\g<1>{scores[metric]}\g<2>", text)
    text = re.sub(r"(\nversion: )\d+", rf"\g<1>{entry['version']}", text)
    return text


# ---------------------------------------------------------------- the improvement round


def warm_start_file(init_source: str, target: Path, *, offline: bool = False) -> Path:
    """Write the exact warm start of an RRDBNet init source (``realsr-df2k``) as a float16 SPSR file."""
    from spsr_cli.model.spsr import SPSRNet
    from spsr_cli.train.pretrained import embed_rrdbnet
    from spsr_cli.weights.ncnn import rrdb_init_sources, rrdb_init_state_dict
    from spsr_cli.weights.store import write_generator_file

    entry = rrdb_init_sources()[init_source.removesuffix("-rrdb")]
    model = SPSRNet()
    embed_rrdbnet(model, rrdb_init_state_dict(init_source, offline=offline))
    write_generator_file(
        target,
        model.state_dict(),
        model.config,
        source=f"exact warm start from {entry.name}",
        licence=str(entry.licence or ""),
        extra_metadata={"init": entry.name},
    )
    return target


def hardware_summary() -> str:
    """CPU model and precision path (or the CUDA device) the training ran on."""
    import platform

    import torch

    from spsr_cli.engine.device import cpu_flags, cpu_has_bf16_units

    if torch.cuda.is_available():
        return f"CUDA {torch.cuda.get_device_name(0)}"
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    units = "AMX" if "amx_bf16" in cpu_flags() else "AVX512-BF16" if cpu_has_bf16_units() else "no bf16 units"
    return f"{torch.get_num_threads()} CPU threads, {model} ({units})"


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Steps, wall time and speed of a training run, from its JSON-lines log."""
    rows = [
        json.loads(line)
        for line in (Path(run_dir) / "log.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    starts = [r for r in rows if r.get("event") == "start"]
    steps = [r for r in rows if "event" not in r and "step" in r]
    wall = 0.0
    for i, start in enumerate(starts):  # sum each session (start .. its last row)
        end = starts[i + 1]["time"] if i + 1 < len(starts) else rows[-1]["time"]
        session = [r["time"] for r in rows if start["time"] <= r["time"] <= end]
        wall += max(session) - start["time"]
    last_step = max((r["step"] for r in steps), default=0)
    first_step = starts[0]["step"] if starts else 0
    trained = last_step - first_step
    return {
        "steps": trained,
        "wall_minutes": round(wall / 60.0, 1),
        "it_s": round(trained / wall, 4) if wall > 0 else None,
        "amp_bf16": bool(starts and starts[-1].get("amp")),
        "perceptual": starts[-1].get("perceptual") if starts else None,
    }


LICENCE = "Apache-2.0 (derived from RealSR DF2K, Copyright Tencent; see MODEL_CARD.md)"
DESCRIPTION = (
    "SPSR x4 fine-tuned from the RealSR DF2K RRDBNet (base_model) on BSDS500 + T91 with the SPSR-G "
    "objective, the whole network (trunk included) trained by this project; see MODEL_CARD.md"
)
WARM_START_DESCRIPTION = (
    "SPSR x4 whose output is the RealSR DF2K RRDBNet's (exact warm start; no training by this "
    "project yet; the gradient branch does not change the output); see MODEL_CARD.md"
)
