"""Shared look of the site's figures: the Okabe-Ito colour-blind-safe palette and the example batch."""

from __future__ import annotations

import numpy as np

import maskloss

#: Okabe-Ito colours (safe for the common colour-vision deficiencies).
BLUE, ORANGE, GREEN, VERMILION, SKY, PURPLE, YELLOW, GREY = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#56B4E9",
    "#CC79A7",
    "#F0E442",
    "#BBBBBB",
)

#: The seed example: three sequences of 3, 5 and 1 valid steps, per-step losses 1, 2 and 6.
LENGTHS = [3, 5, 1]
STEPS = 5


def seed_batch() -> tuple[np.ndarray, np.ndarray]:
    """The seed's per-step losses (NaN under the mask) and its mask."""
    mask = maskloss.mask_from_lengths(LENGTHS, STEPS)
    losses = np.where(mask, np.array([[1.0], [2.0], [6.0]]), np.nan)
    return losses, mask
