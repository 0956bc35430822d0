"""Which way the patient lies on screen: the R/L, A/P, H/F markers at the edges of the view.

DICOM Patient Orientation (0020,0020) names the patient direction of the image's rows (the
direction of increasing column index, to the right) and of its columns (increasing row index,
down), each as letters L/R, A/P, H/F (``L\\F`` for a PA chest: to the right is the patient's
left, down is towards the feet). The view's rotation and flips are a 2x2 signed permutation
matrix from image vectors to screen vectors (``viewer/canvas.py``); a marker follows them.
A direction the file does not state is never guessed: no Patient Orientation, no markers.
"""

from __future__ import annotations

from inference.image import ImageMeta

__all__ = ["patient_orientation", "edge_markers", "opposite"]

_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
Matrix = tuple[tuple[int, int], tuple[int, int]]


def opposite(direction: str) -> str:
    return "".join(_OPPOSITE[c] for c in direction)


def patient_orientation(meta: ImageMeta) -> tuple[str, str] | None:
    """(row direction, column direction) from Patient Orientation, or None when absent or malformed."""
    value = next((v for _t, kw, _vr, v in meta.tags if kw == "PatientOrientation"), "")
    parts = [p.strip().upper() for p in value.split("\\")]
    if len(parts) != 2 or not all(p and len(p) <= 3 and set(p) <= set(_OPPOSITE) for p in parts):
        return None
    return parts[0], parts[1]


def edge_markers(orientation: tuple[str, str] | None, view: Matrix = ((1, 0), (0, 1))) -> dict[str, str]:
    """Markers for the ``left``, ``right``, ``top`` and ``bottom`` screen edges (empty dict when unknown).

    ``view`` maps image vectors to screen vectors: x' = a x + b y, y' = c x + d y.
    """
    if orientation is None:
        return {}
    row_dir, col_dir = orientation
    (a, b), (c, d) = view
    # The image vector shown along screen +x is the first column of the inverse, i.e. of the
    # transpose for a signed permutation: (a, b); along screen +y it is (c, d).

    def label(ix: int, iy: int) -> str:
        if ix:
            return row_dir if ix > 0 else opposite(row_dir)
        return col_dir if iy > 0 else opposite(col_dir)

    right, down = label(a, b), label(c, d)
    return {"right": right, "left": opposite(right), "bottom": down, "top": opposite(down)}
