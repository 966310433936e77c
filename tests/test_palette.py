"""The heatmap's colours stay apart for readers with a colour-vision deficiency.

Simulation: Machado, Oliveira & Fernandes (2009), "A Physiologically-based Model for Simulation of
Color Vision Deficiency", severity 1.0 matrices, applied to linear sRGB; distance: CIE76 (Euclidean
distance in CIE L*a*b*, D65). Thresholds from issue 12: at least 20 under deuteranopia and
protanopia, at least 15 under tritanopia, for every pair of outcome colours (the outage look too).
"""

from __future__ import annotations

import itertools
import math

import pytest

from harness.report import COLOR, OUTAGE_COLOR

MACHADO_2009 = {
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413), (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602), (0.004733, 0.691367, 0.303900)),
}
THRESHOLD = {"deuteranopia": 20.0, "protanopia": 20.0, "tritanopia": 15.0, "normal vision": 20.0}


def _linear(hex_colour: str) -> tuple[float, ...]:
    h = hex_colour.lstrip("#")
    srgb = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    return tuple(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb)


def _simulate(rgb: tuple[float, ...], kind: str) -> tuple[float, ...]:
    if kind not in MACHADO_2009:
        return rgb
    return tuple(min(1.0, max(0.0, sum(m * c for m, c in zip(row, rgb, strict=True)))) for row in MACHADO_2009[kind])


def _lab(rgb: tuple[float, ...]) -> tuple[float, float, float]:
    r, g, b = rgb
    xyz = (
        (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047,
        (0.2126729 * r + 0.7151522 * g + 0.0721750 * b) / 1.0,
        (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883,
    )
    f = [t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29 for t in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def cie76(a: str, b: str, kind: str) -> float:
    return math.dist(_lab(_simulate(_linear(a), kind)), _lab(_simulate(_linear(b), kind)))


PALETTE = {**{o.value: c for o, c in COLOR.items()}, "outage": OUTAGE_COLOR}


@pytest.mark.parametrize("kind", sorted(THRESHOLD))
def test_every_pair_of_outcome_colours_stays_apart(kind: str) -> None:
    pairs = {(a, b): cie76(PALETTE[a], PALETTE[b], kind) for a, b in itertools.combinations(PALETTE, 2)}
    worst = min(pairs, key=pairs.__getitem__)
    assert pairs[worst] >= THRESHOLD[kind], f"{kind}: {worst} only {pairs[worst]:.1f} apart"


def test_the_simulation_reproduces_the_old_palette_problem() -> None:
    """The check can fail: the old served/spoofed pair collapsed to one olive under deuteranopia."""
    assert cie76("#2e7d32", "#c62828", "deuteranopia") == pytest.approx(15.8, abs=0.05)
