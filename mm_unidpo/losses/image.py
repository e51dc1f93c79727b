"""Image-side terms: make the preference depend on the image (an option of every objective, like balance).

A VLM trained on text pairs alone can learn a preference that ignores the image (mDPO's "unconditional
preference"). Both terms compare the chosen response y_w under the real image m with the same response
under a contrast image m̃ (a corrupted view, data/corruption.py, or another image); they read
`PairLogps.policy_chosen_contrast` L̃_w and `reference_chosen_contrast` L̃^ref_w, SUMMED log-probs as the
official code sums them. With r_w = L_w − L^ref_w and r̃_w = L̃_w − L̃^ref_w:

image_term="mdpo" (Wang et al., "mDPO: Conditional Preference Optimization for Multimodal Large Language
Models", arXiv 2406.11839; luka-group/mDPO `mdpo_trainer.py`), added to the objective's per-pair loss:

    conditional = −log σ(β_img · (r_w − r̃_w))            the chosen response is likelier with the real image
    anchored    = −log σ(β_img · r_w − δ)                 the chosen reward stays above δ
    loss       += image_weight · conditional + anchor_weight · anchored

The official code uses DPO's own β for both terms (β_img = `image_beta`, default 0.1 = mDPO's β), δ = 0
and weight 1 for each (the defaults here). Without reference log-probs (a reference-free objective),
r_w = L_w and r̃_w = L̃_w (mDPO's `reference_free`).

image_term="chip" (Fu et al., "CHiP: Cross-modal Hierarchical Direct Preference Optimization for
Multimodal LLMs", arXiv 2501.16629; LVUGAI/CHiP `chip_loss`): the visual comparison inside the
objective's own logit,

    z = β · (Δ + image_weight · (r_w − r̃_w))              (CHiP: image_weight 1, a noised image)

so only objectives with such a logit take it (those whose function has an `image_margin` keyword;
where they length-normalise Δ, the margin is divided by |y_w| as well). `image_beta` and `anchor_*`
are mDPO's and not read by chip.

Both use the raw sums (not LD-DPO's `ld_alpha` mix: the contrast sequence has no shared prefix).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pair import PairLogps
from .params import OneOf, Range, Rule

IMAGE_TERMS = (None, "mdpo", "chip")

# The option's parameters with their defaults (registry.OPTIONS) and rules (checked with every objective).
DEFAULTS: dict[str, object] = {
    "image_term": None,
    "image_beta": 0.1,
    "image_weight": 1.0,
    "anchor_weight": 1.0,
    "anchor_delta": 0.0,
}
RULES: dict[str, Rule] = {
    "image_term": OneOf(IMAGE_TERMS),
    "image_beta": Range(0.0, low_open=True, why="a beta <= 0 rewards the chosen response for ignoring the image"),
    "image_weight": Range(0.0),
    "anchor_weight": Range(0.0),
    "anchor_delta": Range(),
}


def contrast_ratios(pair: PairLogps) -> tuple[torch.Tensor, torch.Tensor]:
    """r_w and r̃_w (the policy sums alone when the pair carries no reference)."""
    contrast = pair.chosen_contrast
    if pair.reference_chosen is None:
        return pair.policy_chosen, contrast
    return pair.policy_chosen - pair.reference_chosen, contrast - pair.reference_contrast


def mdpo_terms(pair: PairLogps, image_beta: float, anchor_delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mDPO's per-pair conditional and anchored terms (the module docstring)."""
    r_w, r_contrast = contrast_ratios(pair)
    conditional = -F.logsigmoid(image_beta * (r_w - r_contrast))
    anchored = -F.logsigmoid(image_beta * r_w - anchor_delta)
    return conditional, anchored


def chip_margin(pair: PairLogps, image_weight: float) -> torch.Tensor:
    """CHiP's visual margin image_weight · (r_w − r̃_w), added to Δ inside the objective's logit."""
    r_w, r_contrast = contrast_ratios(pair)
    return image_weight * (r_w - r_contrast)


def check_image_term(name: str, values: dict[str, object], has_logit: bool) -> str | None:
    """The rule across parameters: chip needs a logit to put its margin in (the message, or None)."""
    if values.get("image_term") == "chip" and not has_logit:
        return (
            f"image_term: {name!r} has no sigmoid logit of the reward difference for CHiP's visual margin "
            f"(image_term 'chip' composes with dpo, adadpo, sigmoid, sigmoid_norm, rdpo, robust, exo_pair, "
            f"discopop, unidpo); use image_term 'mdpo', which adds its terms to any objective"
        )
    return None
