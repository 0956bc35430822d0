"""Exports blend the heat map exactly as the screen composes it (issue 14)."""

from __future__ import annotations

import numpy as np

from inference.overlay import blend, colorize, heat_alpha


def test_blend_equals_the_screen_composition() -> None:
    # The canvas draws RGBA(colour, heat_alpha) with item opacity o over the gray image:
    # out = base * (1 - o * a) + colour * o * a.
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (40, 50)).astype(np.uint8)
    heat = rng.random((40, 50)).astype(np.float32)
    for opacity in (0.2, 0.45, 0.9):
        a = heat_alpha(heat).astype(np.float64)[..., None] / 255.0 * opacity
        screen = gray[..., None] * (1 - a) + colorize(heat, "inferno") * a
        out = blend(gray, heat, opacity, "inferno").astype(np.float64)
        assert np.abs(out - screen).max() <= 1.0


def test_cold_anatomy_survives_high_opacity() -> None:
    gray = np.full((10, 10), 180, np.uint8)
    heat = np.zeros((10, 10), np.float32)
    heat[:2] = 1.0
    out = blend(gray, heat, opacity=0.9, colormap="inferno")
    assert (out[2:] == 180).all()  # inferno's black for zero heat must not cover the film
    assert (out[:2] != 180).any()
