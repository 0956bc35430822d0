"""What goes into the PyInstaller bundle, in one place, read by ``cxr_viewer.spec`` and by the tests.

Kept free of PyInstaller imports so ``tests/test_packaging.py`` can check it without building.
This folder is deliberately not a Python package: a ``packaging/__init__.py`` would shadow the
``packaging`` library that PyInstaller and setuptools import. Load it by path
(:func:`load` in the spec, ``importlib.util`` in the tests).
"""

from __future__ import annotations

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
    "platforms/libqwayland",
    "platforms/libqeglfs",
    "platforms/libqlinuxfb",
    "platforms/libqminimalegl",
    "platforms/libqvnc",
    "platforms/libqvkkhrdisplay",
    "plugins/wayland-",
    "plugins/egldeviceintegrations",
    "imageformats/libqpdf",
    "platforminputcontexts/libqtvirtualkeyboard",
)


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
