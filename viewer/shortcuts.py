"""Every key and mouse binding of the viewer, in one table.

The main window builds its actions from :data:`SHORTCUTS` and the help dialog lists the
same table, so the documentation cannot drift from the behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Shortcut", "SHORTCUTS", "MOUSE", "WINDOW_LEVEL_HELP", "DISPLAY_HELP", "shortcut_for"]


@dataclass(frozen=True)
class Shortcut:
    action: str  # the action's id in the main window
    keys: tuple[str, ...]  # QKeySequence strings; the first is shown in menus
    text: str  # menu text
    help: str  # one line for the help dialog
    group: str


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("open", ("Ctrl+O",), "&Open…", "Open images or DICOM files", "File"),
    Shortcut("open_folder", ("Ctrl+Shift+O",), "Open &folder…", "Open every image in a folder (recursive)", "File"),
    Shortcut("export", ("Ctrl+E",), "&Export…", "Export the current or all images (PNG, PDF, DICOM SC, CSV)", "File"),
    Shortcut("close_image", ("Ctrl+W",), "&Close image", "Close the current image", "File"),
    Shortcut("quit", ("Ctrl+Q",), "&Quit", "Quit", "File"),
    Shortcut("default_window", ("0",), "&Default window", "Default window (DICOM header or automatic)", "Window"),
    Shortcut("invert", ("I",), "&Invert", "Invert gray levels", "Window"),
    Shortcut("fit", ("=",), "&Fit to window", "Fit the image to the window", "View"),
    Shortcut("zoom_in", ("+", "Ctrl++"), "Zoom &in", "Zoom in", "View"),
    Shortcut("zoom_out", ("-", "Ctrl+-"), "Zoom &out", "Zoom out", "View"),
    Shortcut("actual_size", ("Ctrl+1",), "&Actual pixels", "One image pixel per screen pixel", "View"),
    Shortcut(
        "reset_view",
        ("Esc", "Space"),
        "&Reset view",
        "Cancel a drawing (then back to Select); else reset zoom, pan, rotation, flips and window",
        "View",
    ),
    Shortcut("rotate_left", ("[",), "Rotate &left", "Rotate the view 90° counter-clockwise", "View"),
    Shortcut("rotate_right", ("]",), "Rotate &right", "Rotate the view 90° clockwise", "View"),
    Shortcut("flip_h", ("H",), "Flip &horizontal", "Mirror the view left-right", "View"),
    Shortcut("flip_v", ("V",), "Flip &vertical", "Mirror the view top-bottom", "View"),
    Shortcut("fullscreen", ("F11",), "&Full screen", "Toggle full screen", "View"),
    Shortcut(
        "corner_text",
        ("Ctrl+I",),
        "Show &corner information",
        "Show or hide all the text in the image corners (patient, study, window, zoom, spacing)",
        "View",
    ),
    Shortcut(
        "hide_identifiers",
        ("Ctrl+Shift+I",),
        "Hide &identifiers on screen",
        "Leave patient name, ID, birth date and file name out of the corners (remembered)",
        "View",
    ),
    Shortcut("font_larger", ("Ctrl+Shift+Up",), "&Larger text", "Larger text everywhere (remembered)", "View"),
    Shortcut("font_smaller", ("Ctrl+Shift+Down",), "&Smaller text", "Smaller text everywhere (remembered)", "View"),
    Shortcut("font_reset", ("Ctrl+Shift+N",), "&Normal text size", "Text at the system size", "View"),
    Shortcut("prev_image", ("Up", "PgUp", "Left"), "&Previous image", "Previous image", "Images"),
    Shortcut("next_image", ("Down", "PgDown", "Right"), "&Next image", "Next image", "Images"),
    Shortcut("first_image", ("Home",), "F&irst image", "First image in the list", "Images"),
    Shortcut("last_image", ("End",), "L&ast image", "Last image in the list", "Images"),
    # Measuring and annotating (viewer/tools.py); marks are saved with the film (its sidecar).
    Shortcut(
        "tool_select",
        ("S",),
        "&Select",
        "Select (click), move (drag) or adjust (drag a handle) a mark; a left drag elsewhere sets the window",
        "Tools",
    ),
    Shortcut(
        "tool_distance",
        ("D",),
        "&Distance",
        "Distance: drag, or click both ends (mm; at detector; px without spacing)",
        "Tools",
    ),
    Shortcut("tool_angle", ("A",), "&Angle", "Angle: drag the first arm, click the end of the second", "Tools"),
    Shortcut("tool_cobb", ("B",), "Cob&b angle", "Cobb angle: drag one line along each end plate", "Tools"),
    Shortcut(
        "tool_rect", ("R",), "&Rectangle ROI", "Rectangle ROI: drag; mean, SD, min, max (stored values), area", "Tools"
    ),
    Shortcut("tool_ellipse", ("E",), "&Ellipse ROI", "Ellipse ROI: drag its box; mean, SD, min, max, area", "Tools"),
    Shortcut("tool_arrow", ("W",), "Arro&w", "Arrow: drag from the tail to the point shown", "Tools"),
    Shortcut("tool_text", ("T",), "&Text", "Text: click where it goes and type", "Tools"),
    Shortcut(
        "tool_ctr",
        ("C",),
        "&Cardiothoracic ratio",
        "Cardiothoracic ratio: proposed from the lung model when it finds the lungs, else drag the "
        "maximal cardiac width, then the inner thoracic width; drag the handles to adjust both",
        "Tools",
    ),
    Shortcut("tool_loupe", ("Z",), "&Loupe", "Magnifier around the cursor (3x), on or off", "Tools"),
    Shortcut("edit_text", ("F2",), "Edit te&xt", "Edit the text of the selected mark (or double-click it)", "Tools"),
    Shortcut("delete_mark", ("Delete", "Backspace"), "De&lete mark", "Delete the selected mark", "Tools"),
    Shortcut("undo", ("Ctrl+Z",), "&Undo", "Undo the last change to the marks of this film", "Tools"),
    Shortcut("redo", ("Ctrl+Y", "Ctrl+Shift+Z"), "Re&do", "Redo", "Tools"),
    Shortcut("overlay", ("G",), "&Grad-CAM overlay", "Show or hide the Grad-CAM overlay", "AI"),
    Shortcut("models", ("Ctrl+M",), "&Model manager…", "List, switch, import and delete models", "AI"),
    Shortcut("train", ("Ctrl+T",), "&Train a model…", "Train a model on a folder of labelled images", "AI"),
    Shortcut("help", ("F1",), "&Keyboard and mouse…", "This help", "Help"),
    # Reading (issue 15): the reader's verdict, the worklist, compare. Not while typing in a text field.
    Shortcut("verdict_agree", ("Y",), "&Agree with the AI", "Agree with the AI: its class becomes yours", "Reading"),
    Shortcut("verdict_disagree", ("N",), "&Disagree with the AI", "Disagree with the class the AI gave", "Reading"),
    Shortcut("reader_covid", ("F5",), "Reader: &COVID-19", "Your class: COVID-19", "Reading"),
    Shortcut("reader_normal", ("F6",), "Reader: &Normal", "Your class: Normal", "Reading"),
    Shortcut("reader_pneumonia", ("F7",), "Reader: &Pneumonia", "Your class: Pneumonia", "Reading"),
    Shortcut("reader_other", ("F8",), "Reader: &Other finding", "Your class: Other finding", "Reading"),
    Shortcut("reader_not_assessable", ("F9",), "Reader: Not &assessable", "Your class: Not assessable", "Reading"),
    Shortcut("impression", ("F4",), "&Impression…", "Type the impression (Esc or Ctrl+Enter: back)", "Reading"),
    Shortcut(
        "next_unread",
        ("U",),
        "Next &unread film",
        "The next film without a verdict, in the order of the list",
        "Reading",
    ),
    Shortcut(
        "compare",
        ("Ctrl+Shift+P",),
        "&Compare with prior",
        "Side by side with a prior film of the same patient",
        "Reading",
    ),
)

MOUSE: tuple[tuple[str, str], ...] = (
    ("Left drag", "Window/level: right = wider window (less contrast), up = brighter, down = darker"),
    ("Left drag with a tool (D A B R E W T C)", "Draw; on a selected mark's handle: adjust it; Esc cancels"),
    ("Ctrl + left drag", "Window/level in fine steps (one tenth)"),
    ("Middle drag", "Pan"),
    ("Right drag", "Zoom: up = in, down = out, around the point where the drag started"),
    ("Right click", "Context menu"),
    ("Wheel", "Zoom at the cursor"),
    ("Drop files or folders", "Open them (folders are searched recursively)"),
)

WINDOW_LEVEL_HELP = (
    "Left drag sets the window. Horizontal movement changes the width: to the right the window widens "
    "(less contrast), to the left it narrows (more contrast). Vertical movement changes the brightness: up "
    "makes the image brighter, down darker, on every film (on MONOCHROME1 films and inverted views this "
    "moves the centre the other way, since high values are shown dark there). Hold Ctrl for fine steps. The "
    "centre and width are shown in the status bar in stored pixel values. Keys 1-9 are presets, 0 returns "
    "to the default window. Radiographs have no absolute scale like Hounsfield units, so the presets other "
    "than the file's own window are defined from percentiles of each image's pixel values."
)


DISPLAY_HELP = (
    "The corners show the patient (name, ID, birth date, age and sex) and the file at the top left; the "
    "study date and description, view position, modality, institution and the AI result at the top right; "
    "the window centre and width, zoom, rotation or flips and the pixel spacing at the bottom left "
    "(at detector when the file gives Imager Pixel Spacing, not stated when it gives none). "
    "Ctrl+I hides all corner text; View > Hide identifiers on screen (Ctrl+Shift+I) leaves out the name, "
    "ID, birth date and file name and is remembered. The letters at the edges (R/L right/left, A/P "
    "anterior/posterior, H/F head/feet) give the patient direction from the file's Patient Orientation and "
    "follow rotations and flips; when the file does not state it no letter is drawn. The status bar gives "
    "the pixel under the cursor: position (in mm when the spacing is known) and value (in modality units, "
    "with the value stored in the file beside it when Rescale Slope/Intercept change it)."
)


def shortcut_for(action: str) -> Shortcut:
    for shortcut in SHORTCUTS:
        if shortcut.action == action:
            return shortcut
    raise KeyError(action)
