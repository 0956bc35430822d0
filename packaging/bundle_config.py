"""What goes into the PyInstaller bundle, in one place, read by ``cxr_viewer.spec`` and by the tests.

Kept free of PyInstaller imports so ``tests/test_packaging.py`` can check it without building.
This folder is deliberately not a Python package: a ``packaging/__init__.py`` would shadow the
``packaging`` library that PyInstaller and setuptools import. Load it by path
(:func:`load` in the spec, ``importlib.util`` in the tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY_SCRIPT = ROOT / "main.py"
APP_NAME = "cxr-viewer"

# Copied whole to ``<bundle>/_internal/resources``: ``inference.paths.resources_dir()`` resolves
# ``sys._MEIPASS / "resources"`` when frozen, so the destination name must stay "resources".
RESOURCES_SRC = ROOT / "resources"
RESOURCES_DEST = "resources"
# Training leftovers and editor droppings that must not ship if they sit in resources/.
RESOURCE_EXCLUDES = ("__pycache__", "*.pyc", "*.log", "*.tmp", ".DS_Store", "checkpoints", "*.partial")

# pydicom finds its pixel-data plugins through ``importlib.metadata`` entry points
# (``pylibjpeg.utils.get_pixel_data_decoders``): without the dist-info folders the frozen
# app imports the plugins but never registers them, and every compressed DICOM fails.
# The PySide6 distributions are only for the version report of ``--self-test``.
METADATA_DISTS = (
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pydicom",
    "PySide6-Essentials",
    "shiboken6",
)

# Imported by name at run time (entry points, pydicom's plugin tables, matplotlib's
# format-to-backend lookup), so PyInstaller's import scan cannot see them.
HIDDEN_IMPORTS = (
    "pylibjpeg",
    "pylibjpeg.utils",
    "libjpeg",
    "libjpeg.utils",
    "_libjpeg",  # the plugins' compiled decoders are top-level extension modules
    "openjpeg",
    "openjpeg.utils",
    "_openjpeg",
    "rle",
    "rle.utils",
    "rle.rle",
    "pydicom.pixels.decoders.pylibjpeg",
    "pydicom.pixels.encoders.pylibjpeg",
    "pydicom.pixels.decoders.rle",
    "pydicom.pixels.encoders.native",
    "matplotlib.backends.backend_agg",
    "matplotlib.backends.backend_pdf",
)

# Matplotlib draws reports with the Agg (PNG) and PDF canvases; QtAgg is there for a Qt figure
# in the viewer. Naming them stops PyInstaller's auto-detection from adding GUI backends.
MATPLOTLIB_BACKENDS = ("Agg", "PDF", "QtAgg")

# Exactly one Qt binding (PySide6) and only the Qt modules the viewer uses (QtCore, QtGui,
# QtWidgets; SVG icons load through Qt's iconengines plugin, not the QtSvg Python module).
OTHER_QT_BINDINGS = ("PyQt5", "PyQt6", "PySide2", "shiboken2", "sip", "PyQt5.sip", "PyQt6.sip")
UNUSED_QT_MODULES = tuple(
    f"PySide6.{name}"
    for name in (
        "Qt3DAnimation",
        "Qt3DCore",
        "Qt3DExtras",
        "Qt3DInput",
        "Qt3DLogic",
        "Qt3DRender",
        "QtAxContainer",
        "QtBluetooth",
        "QtCharts",
        "QtConcurrent",
        "QtDataVisualization",
        "QtDBus",
        "QtDesigner",
        "QtGraphs",
        "QtGraphsWidgets",
        "QtHelp",
        "QtHttpServer",
        "QtLocation",
        "QtMultimedia",
        "QtMultimediaWidgets",
        "QtNetwork",
        "QtNetworkAuth",
        "QtNfc",
        "QtOpenGL",
        "QtOpenGLWidgets",
        "QtPdf",
        "QtPdfWidgets",
        "QtPositioning",
        "QtPrintSupport",
        "QtQml",
        "QtQuick",
        "QtQuick3D",
        "QtQuickControls2",
        "QtQuickTest",
        "QtQuickWidgets",
        "QtRemoteObjects",
        "QtScxml",
        "QtSensors",
        "QtSerialBus",
        "QtSerialPort",
        "QtSpatialAudio",
        "QtSql",
        "QtStateMachine",
        "QtSvg",
        "QtSvgWidgets",
        "QtTest",
        "QtTextToSpeech",
        "QtUiTools",
        "QtWebChannel",
        "QtWebEngineCore",
        "QtWebEngineQuick",
        "QtWebEngineWidgets",
        "QtWebSockets",
        "QtWebView",
        "QtXml",
    )
)
# Development and test tooling, GUI toolkits the app does not use, TensorBoard (training logs
# are CSV/JSON), and pydicom-data's 56 MB of test DICOMs (``data_store``).
DEV_AND_UNUSED = (
    "tkinter",
    "_tkinter",
    "turtle",
    "idlelib",
    "tensorboard",
    "tensorboard_data_server",
    "tensorboard_plugin_profile",
    "pytest",
    "_pytest",
    "pytestqt",
    "pluggy",
    "iniconfig",
    "hypothesis",
    "tests",
    "data_store",
    "IPython",
    "ipykernel",
    "jupyter_client",
    "notebook",
    "PyInstaller",
    "clang",
    "ruff",
    "pip",
    "setuptools",
    "wheel",
)
EXCLUDES = OTHER_QT_BINDINGS + UNUSED_QT_MODULES + DEV_AND_UNUSED

# Shared libraries (matched against the bundle path) dropped after analysis: Qt modules that
# reach the bundle only as plugin or binary-scan dependencies of QtGui. The viewer runs on
# xcb (X11/XWayland) and offscreen; Wayland-native, EGLFS and VNC platform plugins, the
# Qt Quick/QML stack and the PDF/WebEngine image format plugins are not needed.
BINARY_EXCLUDE_PATTERNS = (
    "libQt6Qml",
    "libQt6Quick",
    "libQt6Pdf",
    "libQt6WebEngine",
    "libQt6Designer",
    "libQt6Multimedia",
    "libQt63D",
    "libQt6Wayland",
    "libQt6EglFS",
    "libQt6EglFs",
    "libQt6Lottie",
    "libQt6Labs",
    "libQt6VirtualKeyboard",
    "libQt6WlShell",
    "libQt6Network",  # only the TUIO touch plugin below links it
    "platforms/libqwayland",
    "platforms/libqeglfs",
    "platforms/libqlinuxfb",
    "platforms/libqminimalegl",
    "platforms/libqvnc",
    "platforms/libqvkkhrdisplay",
    "plugins/wayland-",
    "plugins/egldeviceintegrations",
    "plugins/generic/",  # evdev/TUIO input for framebuffer and kiosk set-ups
    "imageformats/libqpdf",
    "platforminputcontexts/libqtvirtualkeyboard",
)


# TensorFlow's shared libraries ship with their full symbol tables: stripping them with
# ``strip --strip-unneeded`` (which keeps every symbol the dynamic linker needs) takes about
# 240 MB off the bundle. Other packages ship stripped libraries already, and are left alone.
STRIP_PREFIXES = ("tensorflow/",)
_STRIPPABLE_KINDS = ("BINARY", "EXTENSION")


def resource_datas() -> list[tuple[str, str]]:
    """``(source, dest_dir)`` pairs for every shipped resource file, skipping :data:`RESOURCE_EXCLUDES`."""
    pairs = []
    for path in sorted(RESOURCES_SRC.rglob("*")):
        if not path.is_file() or _excluded(path.relative_to(RESOURCES_SRC)):
            continue
        dest = Path(RESOURCES_DEST) / path.parent.relative_to(RESOURCES_SRC)
        pairs.append((str(path), dest.as_posix()))
    return pairs


def _excluded(relative: Path) -> bool:
    return any(part.match(pattern) for part in map(Path, relative.parts) for pattern in RESOURCE_EXCLUDES)


def keep_binary(dest_name: str) -> bool:
    """False for a collected binary that :data:`BINARY_EXCLUDE_PATTERNS` leaves out."""
    name = dest_name.replace("\\", "/")
    return not any(pattern in name for pattern in BINARY_EXCLUDE_PATTERNS)


def strip_binaries(
    entries: Iterable[tuple[str, str, str]], cache_dir: str | os.PathLike[str], strip_tool: str | None = None
) -> list[tuple[str, str, str]]:
    """PyInstaller's ``(dest, source, kind)`` entries, with the libraries under :data:`STRIP_PREFIXES`
    swapped for stripped copies kept in ``cache_dir`` (rebuilt when their source is newer).

    A no-op off Linux or without GNU ``strip``; a library that ``strip`` refuses ships unstripped.
    """
    tool = strip_tool or shutil.which("strip")
    entries = list(entries)
    if not tool or not sys.platform.startswith("linux"):
        return entries
    result = []
    for dest, source, kind in entries:
        if kind in _STRIPPABLE_KINDS and dest.replace("\\", "/").startswith(STRIP_PREFIXES):
            source = _stripped_copy(tool, Path(source), Path(cache_dir) / dest)
        result.append((dest, source, kind))
    return result


def _stripped_copy(tool: str, source: Path, target: Path) -> str:
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    done = subprocess.run([tool, "--strip-unneeded", "-o", str(partial), str(source)], capture_output=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        print(f"bundle_config: not stripping {source}: {done.stderr.decode(errors='replace').strip()}")
        return str(source)
    os.replace(partial, target)
    return str(target)
