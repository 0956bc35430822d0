"""Grayscale Softcopy Presentation State: the reader's marks and window on the original film, built
with highdicom, so that a PACS viewer (Weasis, OHIF) shows them over the untouched image.

Graphics are in PIXEL units on the referenced image (0,0 = top left corner of the top left pixel,
the annotation model's coordinates): distances and angles as polylines, rectangles as closed
polylines, ellipses as ELLIPSE (major then minor axis end points), arrows as a shaft and a head,
text as text objects, and each measurement's value as text beside it. Two layers: the reader's
marks and the measurements. The displayed window goes in as a Softcopy VOI LUT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from inference.annotations import Annotation, Measurement
from inference.image import Window
from inference.loading import import_pydicom

import_pydicom()

import highdicom as hd  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

__all__ = ["presentation_state", "graphic_objects"]

GSPS_SERIES_NUMBER = 9903
_PIXEL = hd.pr.AnnotationUnitsValues.PIXEL


def _arrow(tail: tuple[float, float], head: tuple[float, float]) -> list[np.ndarray]:
    (x0, y0), (x1, y1) = tail, head
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    size = max(3.0, 0.15 * length)
    angle = math.atan2(y1 - y0, x1 - x0)
    wings = [
        (x1 - size * math.cos(angle + s * math.pi / 7), y1 - size * math.sin(angle + s * math.pi / 7)) for s in (1, -1)
    ]
    return [np.array([tail, head]), np.array([wings[0], head, wings[1]])]


def graphic_objects(annotation: Annotation) -> list[hd.pr.GraphicObject]:
    """The GSPS graphics that draw one annotation."""
    p = [tuple(pt) for pt in annotation.points]
    kind = annotation.kind
    if kind in ("distance", "angle"):
        lines = [np.array(p)]
    elif kind in ("cobb", "ctr"):
        lines = [np.array(p[:2]), np.array(p[2:])]
    elif kind == "rect":
        (x0, y0), (x1, y1) = p
        lines = [np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])]
    elif kind == "arrow":
        lines = _arrow(p[0], p[1])
    elif kind == "ellipse":
        (x0, y0), (x1, y1) = p
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        wide = abs(x1 - x0) >= abs(y1 - y0)
        axes = [(x0, cy), (x1, cy), (cx, y0), (cx, y1)] if wide else [(cx, y0), (cx, y1), (x0, cy), (x1, cy)]
        return [hd.pr.GraphicObject(graphic_type="ELLIPSE", graphic_data=np.array(axes), units=_PIXEL)]
    else:  # text: drawn as a text object only
        return []
    return [hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=line, units=_PIXEL) for line in lines]


def _text(text: str, at: tuple[float, float]) -> hd.pr.TextObject:
    return hd.pr.TextObject(text_value=text[:1024], units=_PIXEL, anchor_point=at, anchor_point_visible=False)


def presentation_state(
    reference: Dataset,
    marks: Sequence[tuple[Annotation, Measurement | None]],
    window: Window | None = None,
    reader: str = "",
    series_uid: str | None = None,
) -> Dataset:
    """The GSPS for ``reference`` (the header of the image it applies to, with Rows and Columns)."""
    marks_layer = hd.pr.GraphicLayer(layer_name="READER", order=1, description="Reader's annotations")
    values_layer = hd.pr.GraphicLayer(layer_name="MEASUREMENTS", order=2, description="Measured values")
    drawn, texts, values = [], [], []
    for annotation, measurement in marks:
        drawn += graphic_objects(annotation)
        if annotation.text:
            texts.append(_text(annotation.text, annotation.points[0]))
        if measurement is not None:
            values.append(_text(measurement.text(), annotation.points[-1]))
    annotations = []
    if drawn or texts:
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[reference],
                graphic_layer=marks_layer,
                graphic_objects=drawn or None,
                text_objects=texts or None,
            )
        )
    if values:
        annotations.append(
            hd.pr.GraphicAnnotation(referenced_images=[reference], graphic_layer=values_layer, text_objects=values)
        )
    voi = None
    if window is not None and window.width > 0:
        voi = [
            hd.pr.SoftcopyVOILUTTransformation(
                window_center=float(window.center),
                window_width=float(window.width),
            )
        ]
    state = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[reference],
        series_instance_uid=series_uid or generate_uid(),
        series_number=GSPS_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="CXR Viewer",
        manufacturer_model_name="CXR Viewer",
        software_versions="CXR Viewer",
        device_serial_number="none",
        content_label="READER_MARKS",
        content_description="Reader's annotations and measurements",
        graphic_annotations=annotations or None,
        graphic_layers=[marks_layer, values_layer],
        content_creator_name=(reader.replace(" ", "^")[:60] or None) if reader else None,
        voi_lut_transformations=voi,
    )
    state.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: "mm²" and the reader's own words
    state.BodyPartExamined = "CHEST"  # an unpaired part: tells validators why Laterality is absent
    return state
