"""The SPSR training objective, composed from the losses of :mod:`spsr_cli.train.losses`.

Generator (SPSR-G, ``--stage gan``)::

    L_G = w_pix  * L1(sr, hr)                      pixel
        + w_per  * L1(VGG(sr), VGG(hr))            perceptual
        + w_gan  * RaGAN_G(D_img(hr), D_img(sr))   gan
        + w_gpix * MSE(G'(sr), G'(hr))             gradient_pixel
        + w_ggan * RaGAN_G(D_grad(G'(hr)), D_grad(G'(sr)))  gradient_gan
        + w_br   * L1(branch, G(hr))               branch
        + w_gv   * GV(sr, hr) + w_so * SecondOrder(sr, hr)   (related papers, default 0)

SPSR-P / SPSR-J (``loss.preset``, TPAMI) drop ``gan``, ``gradient_pixel`` and
``gradient_gan`` and add, with ``S`` the normalised features of a frozen NSE::

        + w_spix * L1(S(sr), S(hr))                           structure_pixel
        + w_sgan * RaGAN_G(D_str(S(hr)), D_str(S(sr)))        structure_gan

``G`` is the padding-1 gradient map, ``G'`` the padding-2 one. ``--stage psnr`` keeps
only the pixel and branch terms. Discriminators: ``RaGAN_D`` on images and on
gradient maps, with the SR image detached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from spsr_cli.model.gradient import gradient_map
from spsr_cli.train.losses import (
    GradientMapLoss,
    GradientVarianceLoss,
    PerceptualLoss,
    RelativisticAverageGANLoss,
    SecondOrderGradientLoss,
)
from spsr_cli.train.structure import structure_pixel_loss

GENERATOR_TERMS = (
    "pixel",
    "perceptual",
    "gan",
    "gradient_pixel",
    "gradient_gan",
    "branch",
    "gradient_variance",
    "second_order",
    "structure_pixel",
    "structure_gan",
)
#: Terms that the SPSR-P / SPSR-J presets replace by the structure terms.
GRADIENT_SPACE_TERMS = ("gan", "gradient_pixel", "gradient_gan")
STRUCTURE_TERMS = ("structure_pixel", "structure_gan")


@dataclass(frozen=True)
class LossWeights:
    """Weight of every generator term; a zero weight skips the term entirely."""

    pixel: float = 0.0
    perceptual: float = 0.0
    gan: float = 0.0
    gradient_pixel: float = 0.0
    gradient_gan: float = 0.0
    branch: float = 0.0
    gradient_variance: float = 0.0
    second_order: float = 0.0
    structure_pixel: float = 0.0
    structure_gan: float = 0.0

    @classmethod
    def for_stage(cls, cfg, stage: str) -> LossWeights:
        """Weights of ``stage`` (``psnr`` or ``gan``) from a :class:`TrainConfig`."""
        if stage == "psnr":
            return cls(pixel=cfg.psnr_loss.pixel, branch=cfg.psnr_loss.branch)
        loss = cfg.loss
        values = {name: getattr(loss, name) for name in GENERATOR_TERMS}
        dropped = GRADIENT_SPACE_TERMS if loss.nse_spec() is not None else STRUCTURE_TERMS
        values.update({name: 0.0 for name in dropped})
        return cls(**values)

    @property
    def adversarial(self) -> bool:
        return self.gan > 0 or self.gradient_gan > 0 or self.structure_gan > 0

    @property
    def structure(self) -> bool:
        return self.structure_pixel > 0 or self.structure_gan > 0


class SPSRObjective(nn.Module):
    """Generator and discriminator losses of SPSR.

    Args:
        weights: term weights (zero switches a term off).
        perceptual_backbone: frozen feature extractor for the perceptual term
            (required when ``weights.perceptual > 0``).
        d_image / d_gradient: the image and gradient-map discriminators (required
            when ``weights.gan`` / ``weights.gradient_gan`` > 0). Pass the plain
            modules here; the training loop may run wrapped (DDP) copies for the
            discriminator step via :meth:`discriminator_losses`' arguments.
        structure / d_structure: the frozen structure extractor
            (:class:`spsr_cli.train.structure.StructureFeatures`, required when a
            structure weight is > 0) and the feature-map discriminator (required when
            ``weights.structure_gan`` > 0).
        gv_patch_size: patch size of the Gradient Variance loss.
    """

    def __init__(
        self,
        *,
        weights: LossWeights,
        perceptual_backbone: Union[nn.Module, None] = None,
        d_image: Union[nn.Module, None] = None,
        d_gradient: Union[nn.Module, None] = None,
        gv_patch_size: int = 8,
        structure: Union[nn.Module, None] = None,
        d_structure: Union[nn.Module, None] = None,
    ) -> None:
        super().__init__()
        if weights.structure and structure is None:
            raise ValueError("a structure term has a non-zero weight but no structure extractor (NSE) was given")
        if weights.structure_gan > 0 and d_structure is None:
            raise ValueError("the structure GAN term has a non-zero weight but no feature discriminator was given")
        if weights.perceptual > 0 and perceptual_backbone is None:
            raise ValueError("the perceptual term has a non-zero weight but no backbone was given")
        if weights.gan > 0 and d_image is None:
            raise ValueError("the image GAN term has a non-zero weight but no image discriminator was given")
        if weights.gradient_gan > 0 and d_gradient is None:
            raise ValueError("the gradient GAN term has a non-zero weight but no gradient discriminator was given")
        self.weights = weights
        self.perceptual = PerceptualLoss(backbone=perceptual_backbone) if weights.perceptual > 0 else None
        self.gradient_pixel = GradientMapLoss()
        self.gradient_variance = GradientVarianceLoss(patch_size=gv_patch_size)
        self.second_order = SecondOrderGradientLoss()
        self.ragan = RelativisticAverageGANLoss()
        self.structure = structure  # frozen StructureFeatures (a submodule: moves with .to())
        # Held as plain attributes (not submodules): the loop owns, saves and optimises them.
        self.__dict__["d_image"] = d_image
        self.__dict__["d_gradient"] = d_gradient
        self.__dict__["d_structure"] = d_structure

    def generator_loss(
        self, sr: torch.Tensor, branch: torch.Tensor, hr: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total generator loss and its weighted terms (detached, for logging).

        Args:
            sr: N x 3 x H x W generator output (not clamped); may be None when only the
                ``branch`` term has a weight.
            branch: N x 3 x H x W gradient-branch output.
            hr: N x 3 x H x W target in [0, 1].

        Discriminator parameters receive no gradient here (they are frozen for the call).
        """
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if w.pixel > 0:
            terms["pixel"] = w.pixel * F.l1_loss(sr, hr)
        if w.perceptual > 0:
            terms["perceptual"] = w.perceptual * self.perceptual(sr, hr)
        if w.branch > 0:
            terms["branch"] = w.branch * F.l1_loss(branch, gradient_map(hr, 1))
        if w.gradient_pixel > 0:
            terms["gradient_pixel"] = w.gradient_pixel * self.gradient_pixel(sr, hr)
        if w.gradient_variance > 0:
            terms["gradient_variance"] = w.gradient_variance * self.gradient_variance(sr, hr)
        if w.second_order > 0:
            terms["second_order"] = w.second_order * self.second_order(sr, hr)
        if w.structure:
            with torch.no_grad():
                s_hr = self.structure(hr)
            s_sr = self.structure(sr)
            if w.structure_pixel > 0:
                terms["structure_pixel"] = w.structure_pixel * structure_pixel_loss(s_sr, s_hr)
        if w.adversarial:
            with _frozen(self.d_image, self.d_gradient, self.d_structure):
                if w.gan > 0:
                    real = self.d_image(hr).detach()
                    terms["gan"] = w.gan * self.ragan.generator_loss(real, self.d_image(sr))
                if w.gradient_gan > 0:
                    real = self.d_gradient(gradient_map(hr, 2)).detach()
                    fake = self.d_gradient(gradient_map(sr, 2))
                    terms["gradient_gan"] = w.gradient_gan * self.ragan.generator_loss(real, fake)
                if w.structure_gan > 0:
                    real = self.d_structure(s_hr).detach()
                    terms["structure_gan"] = w.structure_gan * self.ragan.generator_loss(real, self.d_structure(s_sr))
        total = sum(terms.values(), torch.zeros((), device=branch.device, dtype=torch.float32))
        return total, {k: v.detach() for k, v in terms.items()}

    def discriminator_losses(
        self,
        sr: torch.Tensor,
        hr: torch.Tensor,
        *,
        d_image: Union[nn.Module, None] = None,
        d_gradient: Union[nn.Module, None] = None,
        d_structure: Union[nn.Module, None] = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum of the discriminators' RaGAN losses on a detached ``sr``.

        ``d_image`` / ``d_gradient`` default to the modules given at construction
        (pass DDP-wrapped ones to have their gradients averaged across processes).
        Returns (total, {"d_image": ..., "d_gradient": ..., "d_real"/"d_fake" mean logits}).
        """
        d_image = d_image or self.d_image
        d_gradient = d_gradient or self.d_gradient
        d_structure = d_structure or self.d_structure
        sr = sr.detach()
        total = torch.zeros((), device=sr.device, dtype=torch.float32)
        logs: dict[str, torch.Tensor] = {}
        if self.weights.gan > 0:
            real, fake = d_image(hr), d_image(sr)
            loss = self.ragan.discriminator_loss(real, fake)
            total = total + loss
            logs.update(d_image=loss.detach(), d_real=real.detach().float().mean(), d_fake=fake.detach().float().mean())
        if self.weights.gradient_gan > 0:
            loss = self.ragan.discriminator_loss(d_gradient(gradient_map(hr, 2)), d_gradient(gradient_map(sr, 2)))
            total = total + loss
            logs["d_gradient"] = loss.detach()
        if self.weights.structure_gan > 0:
            with torch.no_grad():
                s_hr, s_sr = self.structure(hr), self.structure(sr)
            loss = self.ragan.discriminator_loss(d_structure(s_hr), d_structure(s_sr))
            total = total + loss
            logs["d_structure"] = loss.detach()
        return total, logs


class _frozen:
    """Context manager: set ``requires_grad=False`` on modules' parameters, restore after."""

    def __init__(self, *modules: Union[nn.Module, None]) -> None:
        self.params = [p for m in modules if m is not None for p in m.parameters()]
        self.saved: list[bool] = []

    def __enter__(self) -> None:
        self.saved = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p, flag in zip(self.params, self.saved):
            p.requires_grad_(flag)
