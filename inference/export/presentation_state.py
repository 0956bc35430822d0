"""Grayscale Softcopy Presentation State: the reader's marks and window on the original film, built
with highdicom, so that a PACS viewer (Weasis, OHIF) shows them over the untouched image.

Graphics are in PIXEL units on the referenced image (0,0 = top left corner of the top left pixel,
the annotation model's coordinates): distances and angles as polylines, rectangles as closed
polylines, ellipses as ELLIPSE (major then minor axis end points), arrows as a shaft and a head,
text as text objects, and each measurement's value as text beside it (the geometry of
:mod:`inference.export.marks`, which also burns the marks into the PNG/PDF/SC). Three layers:
"AI" (the AI result as text, its heat peak as a circle), "READER" (the reader's marks) and
"MEASUREMENTS" (the values). Graphics are kept within the image. The displayed window goes in
as a Softcopy VOI LUT, the polarity as the Presentation LUT Shape (INVERSE for MONOCHROME1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference.annotations import Annotation, Measurement
from inference.export.marks import shapes, text_anchor, value_anchor
from inference.export.structured_report import person_name
from inference.image import Window
from inference.loading import import_pydicom

import_pydicom()

import highdicom as hd  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

__all__ = ["presentation_state", "graphic_objects"]

GSPS_SERIES_NUMBER = 9903
_PIXEL = hd.pr.AnnotationUnitsValues.PIXEL


def _inside(points: np.ndarray, reference: Dataset) -> np.ndarray:
    """Points kept within the image (a PACS must not be handed graphics off the film)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    return np.column_stack(
        (np.clip(pts[:, 0], 0.0, float(reference.Columns)), np.clip(pts[:, 1], 0.0, float(reference.Rows)))
    )


def graphic_objects(annotation: Annotation, reference: Dataset | None = None) -> list[hd.pr.GraphicObject]:
    """The GSPS graphics that draw one annotation (the geometry of :func:`inference.export.marks.shapes`)."""
    out = []
    for shape in shapes(annotation):
        pts = shape.points if reference is None else _inside(shape.points, reference)
        kind = "ELLIPSE" if shape.kind == "ellipse" else "POLYLINE"
        out.append(hd.pr.GraphicObject(graphic_type=kind, graphic_data=pts, units=_PIXEL))
    return out


def _text(text: str, at: tuple[float, float], reference: Dataset | None = None) -> hd.pr.TextObject:
    if reference is not None:
        at = tuple(_inside(np.array([at]), reference)[0])
    return hd.pr.TextObject(text_value=text[:1024], units=_PIXEL, anchor_point=at, anchor_point_visible=False)


def presentation_state(
    reference: Dataset,
    marks: Sequence[tuple[Annotation, Measurement | None]],
    window: Window | None = None,
    reader: str = "",
    series_uid: str | None = None,
    *,
    ai_text: str = "",
    ai_peak: tuple[float, float] | None = None,
    inverse: bool = False,
) -> Dataset:
    """The GSPS for ``reference`` (the header of the image it applies to, with Rows and Columns).

    ``ai_text`` (the AI result in words) and ``ai_peak`` (the heat map's hottest pixel, image
    coordinates) go into their own "AI" layer, drawn under the reader's. ``inverse``: show low
    values white (a MONOCHROME1 film shown the right way round, or the reader's invert).
    """
    ai_layer = hd.pr.GraphicLayer(layer_name="AI", order=1, description="AI result (research use only)")
    marks_layer = hd.pr.GraphicLayer(layer_name="READER", order=2, description="Reader's annotations")
    values_layer = hd.pr.GraphicLayer(layer_name="MEASUREMENTS", order=3, description="Measured values")
    drawn, texts, values = [], [], []
    for annotation, measurement in marks:
        drawn += graphic_objects(annotation, reference)
        if annotation.text:
            texts.append(_text(annotation.text, text_anchor(annotation), reference))
        if measurement is not None:
            values.append(_text(measurement.text(), value_anchor(annotation), reference))
    annotations = []
    if ai_text or ai_peak is not None:
        ai_drawn = None
        if ai_peak is not None:
            cx, cy = ai_peak[0] + 0.5, ai_peak[1] + 0.5  # the centre of the hottest pixel
            r = max(2.0, min(float(reference.Columns), float(reference.Rows)) / 40)
            ai_drawn = [
                hd.pr.GraphicObject(
                    graphic_type="CIRCLE",
                    graphic_data=_inside(np.array([(cx, cy), (cx + r, cy)]), reference),
                    units=_PIXEL,
                )
            ]
        ai_texts = [_text(ai_text, (1.0, 1.0), reference)] if ai_text else None
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[reference], graphic_layer=ai_layer, graphic_objects=ai_drawn, text_objects=ai_texts
            )
        )
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
    shape = hd.PresentationLUTShapeValues.INVERSE if inverse else hd.PresentationLUTShapeValues.IDENTITY
    state = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[reference],
        series_instance_uid=series_uid or generate_uid(),
        series_number=GSPS_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="CXR Viewer",  # also the marker that lets a later export replace this file
        manufacturer_model_name="CXR Viewer",
        software_versions="CXR Viewer",
        device_serial_number="none",
        content_label="READER_MARKS",
        content_description="Reader's annotations and measurements",
        graphic_annotations=annotations or None,
        graphic_layers=[ai_layer, marks_layer, values_layer],
        content_creator_name=person_name(reader) if reader.strip() else None,  # Family^Given
        voi_lut_transformations=voi,
        presentation_lut_transformation=hd.PresentationLUTTransformation(presentation_lut_shape=shape),
    )
    state.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: "mm²" and the reader's own words
    state.BodyPartExamined = "CHEST"  # an unpaired part: tells validators why Laterality is absent
    return state
