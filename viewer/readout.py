"""The status bar's pixel readout: position (and in mm when the spacing is known) and value (no Qt here).

The loader applies the DICOM modality transform, so an image's ``pixels`` hold *modality*
values (Rescale Slope/Intercept or a Modality LUT applied). Where that transform changes the
numbers, the readout gives both: the modality value and the value stored in the file,
``stored = (modality - intercept) / slope``. With a Modality LUT the stored value cannot be
recovered from the modality value, so the readout says the LUT was applied instead.
"""

from __future__ import annotations

from inference.annotations import spacing_of
from inference.image import ImageMeta

__all__ = ["rescale_of", "pixel_readout", "value_unit"]


def _tag(meta: ImageMeta, keyword: str) -> str | None:
    return next((v for _t, kw, _vr, v in meta.tags if kw == keyword), None)


def _number(text: str | None) -> float | None:
    try:
        return float(str(text).split("\\")[0]) if text not in (None, "") else None
    except ValueError:
        return None


def rescale_of(meta: ImageMeta) -> tuple[float, float] | None:
    """(slope, intercept) the loader applied, or None when it changed nothing (or a Modality LUT was used)."""
    if _tag(meta, "ModalityLUTSequence") is not None:
        return None
    slope = _number(_tag(meta, "RescaleSlope"))
    intercept = _number(_tag(meta, "RescaleIntercept"))
    slope = 1.0 if slope in (None, 0.0) else slope  # as the loader: a zero slope is treated as absent
    intercept = 0.0 if intercept is None else intercept
    return None if (slope, intercept) == (1.0, 0.0) else (slope, intercept)


def value_unit(meta: ImageMeta) -> str:
    """The modality values' unit: Rescale Type when it names one (not "US", unspecified), HU for CT."""
    kind = (_tag(meta, "RescaleType") or "").strip().upper()
    if kind and kind != "US":
        return kind
    return "HU" if meta.modality.upper() == "CT" else ""


def _shown(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.6g}"


def pixel_readout(meta: ImageMeta, x: int, y: int, value: float) -> str:
    """``x 105, y 85 · 21.0, 17.0 mm · 2000 (stored 1500)`` for pixel column ``x``, row ``y`` holding ``value``."""
    parts = [f"x {x}, y {y}"]
    spacing = spacing_of(meta)
    if spacing.known:
        parts.append(f"{x * spacing.col_mm:.1f}, {y * spacing.row_mm:.1f} {spacing.unit}")
    unit = value_unit(meta)
    text = _shown(value) + (f" {unit}" if unit else "")
    rescale = rescale_of(meta)
    if rescale is not None:
        slope, intercept = rescale
        text += f" (stored {_shown(round((value - intercept) / slope, 6))})"
    elif _tag(meta, "ModalityLUTSequence") is not None:
        text += " (Modality LUT applied)"
    parts.append(text)
    return " · ".join(parts)
