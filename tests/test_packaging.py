"""The PyInstaller configuration, checked without building (``packaging/check.sh`` builds and runs the bundle).

The spec is executed with stand-ins for PyInstaller's build steps, so what it would hand
to PyInstaller (entry script, data files, metadata, hidden imports, excludes) is checked
against the source tree and the installed packages in well under a second.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
SPEC = PACKAGING / "cxr_viewer.spec"
PLUGIN_DISTS = ("pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle")


def _load_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cxr_bundle_config_test", PACKAGING / "bundle_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cfg() -> ModuleType:
    return _load_config()


class _Recorder:
    """Stands in for one of PyInstaller's spec classes (Analysis, PYZ, EXE, COLLECT)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _FakeAnalysis(_Recorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        qt = "PySide6/Qt"
        self.binaries = [
            (f"{qt}/lib/libQt6Core.so.6", "/x", "BINARY"),
            (f"{qt}/lib/libQt6Svg.so.6", "/x", "BINARY"),
            (f"{qt}/lib/libQt6QmlModels.so.6", "/x", "BINARY"),
            (f"{qt}/plugins/platforms/libqxcb.so", "/x", "BINARY"),
            (f"{qt}/plugins/platforms/libqwayland.so", "/x", "BINARY"),
        ]
        self.datas = list(kwargs["datas"])
        self.pure, self.scripts = [], []


@pytest.fixture(scope="module")
def spec_run(tmp_path_factory) -> dict:
    """The spec's namespace after running it with recording stand-ins."""
    pytest.importorskip("PyInstaller", reason="PyInstaller is a dev dependency")
    namespace = {
        "__name__": "__pyinstaller_spec__",
        "SPECPATH": str(PACKAGING),
        "workpath": str(tmp_path_factory.mktemp("pyinstaller-work")),
        "Analysis": _FakeAnalysis,
        "PYZ": _Recorder,
        "EXE": _Recorder,
        "COLLECT": _Recorder,
    }
    exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), namespace)
    return namespace


def test_packaging_folder_does_not_shadow_the_packaging_library():
    # PyInstaller and setuptools import ``packaging``; a packaging/__init__.py here would hide it.
    assert not (PACKAGING / "__init__.py").exists()
    import packaging

    assert Path(packaging.__file__).resolve().parent != PACKAGING


def test_spec_builds_one_folder_from_main(spec_run, cfg):
    analysis = spec_run["a"]
    assert analysis.args[0] == [str(ROOT / "main.py")]
    assert analysis.kwargs["pathex"] == [str(ROOT)]
    exe, coll = spec_run["exe"], spec_run["coll"]
    assert exe.kwargs["exclude_binaries"] is True  # one folder: binaries go to COLLECT, not into the executable
    assert coll.kwargs["name"] == exe.kwargs["name"] == cfg.APP_NAME
    assert analysis.kwargs["hooksconfig"]["matplotlib"]["backends"] == list(cfg.MATPLOTLIB_BACKENDS)


def test_spec_ships_every_resource_under_the_frozen_resources_dir(spec_run, cfg, monkeypatch):
    import inference.paths as paths

    datas = spec_run["a"].kwargs["datas"]
    shipped = {(Path(src).resolve(), dest) for src, dest in datas}
    on_disk = [
        p for p in cfg.RESOURCES_SRC.rglob("*") if p.is_file() and not cfg._excluded(p.relative_to(cfg.RESOURCES_SRC))
    ]
    assert on_disk, "resources/ is empty"
    for path in on_disk:
        dest = (Path("resources") / path.parent.relative_to(cfg.RESOURCES_SRC)).as_posix()
        assert (path.resolve(), dest) in shipped, f"{path} is not in the bundle"
    # The app looks for them exactly there when frozen.
    monkeypatch.setattr(sys, "_MEIPASS", "/bundle/_internal", raising=False)
    assert paths.resources_dir() == Path("/bundle/_internal") / cfg.RESOURCES_DEST
    assert paths.bundled_model_dir() == Path("/bundle/_internal/resources/models/default")


def test_spec_copies_the_metadata_pydicom_finds_its_plugins_with(spec_run):
    dests = {Path(dest).name for _, dest in spec_run["a"].kwargs["datas"]}
    for dist in PLUGIN_DISTS + ("pylibjpeg",):
        info = f"{dist.replace('-', '_')}-{metadata.version(dist)}.dist-info"
        assert info in dests, f"{info} is not collected"


def test_plugins_register_pixel_data_decoders_through_entry_points(cfg):
    # What the copied metadata must provide: pydicom asks pylibjpeg, which reads these groups.
    for dist in PLUGIN_DISTS:
        assert dist in cfg.METADATA_DISTS
        groups = {ep.group for ep in metadata.distribution(dist).entry_points}
        assert "pylibjpeg.pixel_data_decoders" in groups, dist
        modules = {ep.value.split(":")[0] for ep in metadata.distribution(dist).entry_points}
        assert modules <= set(cfg.HIDDEN_IMPORTS), f"{dist} plugin modules {modules} are not hidden imports"


def test_hidden_imports_and_backends_exist(cfg):
    for name in cfg.HIDDEN_IMPORTS:
        assert importlib.util.find_spec(name) is not None, name
    for backend in cfg.MATPLOTLIB_BACKENDS:
        assert importlib.util.find_spec(f"matplotlib.backends.backend_{backend.lower()}") is not None, backend


def test_spec_drops_unused_qt_libraries_and_keeps_the_ones_the_viewer_needs(spec_run):
    kept = {dest for dest, _, _ in spec_run["a"].binaries}
    assert kept == {
        "PySide6/Qt/lib/libQt6Core.so.6",
        "PySide6/Qt/lib/libQt6Svg.so.6",  # the SVG toolbar icons
        "PySide6/Qt/plugins/platforms/libqxcb.so",
    }


@pytest.mark.parametrize(
    "name",
    [
        "PySide6/Qt/lib/libQt6Widgets.so.6",
        "PySide6/Qt/lib/libQt6XcbQpa.so.6",
        "PySide6/Qt/lib/libQt6DBus.so.6",
        "PySide6/Qt/plugins/platforms/libqoffscreen.so",
        "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
        "PySide6/Qt/plugins/iconengines/libqsvgicon.so",
        "PySide6/Qt/plugins/imageformats/libqsvg.so",
        "tensorflow/libtensorflow_cc.so.2",
        "resources/models/default/model.keras",
    ],
)
def test_keep_binary_keeps_what_the_app_uses(cfg, name):
    assert cfg.keep_binary(name)


def _imported_top_modules() -> set[str]:
    """Every module the app's own code imports (``inference``, ``training``, ``viewer``, ``main.py``)."""
    files = [ROOT / "main.py"]
    for package in ("inference", "training", "viewer"):
        files += (ROOT / package).rglob("*.py")
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


def test_excludes_nothing_the_app_imports(cfg):
    excluded = set(cfg.EXCLUDES)
    clashes = sorted(
        name for name in _imported_top_modules() if any(name == ex or name.startswith(ex + ".") for ex in excluded)
    )
    assert not clashes, f"the app imports excluded modules {clashes}: update packaging/bundle_config.py"


def test_excludes_the_other_qt_bindings_and_dev_tools(cfg):
    assert {"PyQt5", "PyQt6", "PySide2", "tkinter", "tensorboard", "pytest", "hypothesis"} <= set(cfg.EXCLUDES)
    assert "PySide6" not in cfg.EXCLUDES
    for needed in ("PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"):
        assert needed not in cfg.EXCLUDES


def test_resource_datas_skips_leftovers(cfg, tmp_path, monkeypatch):
    (tmp_path / "models" / "default").mkdir(parents=True)
    (tmp_path / "models" / "default" / "model.keras").write_bytes(b"k")
    (tmp_path / "models" / "default" / "train.log").write_text("x")
    (tmp_path / "models" / "checkpoints").mkdir()
    (tmp_path / "models" / "checkpoints" / "epoch1.keras").write_bytes(b"k")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"")
    monkeypatch.setattr(cfg, "RESOURCES_SRC", tmp_path)
    assert cfg.resource_datas() == [(str(tmp_path / "models" / "default" / "model.keras"), "resources/models/default")]


@pytest.mark.parametrize("script", ["build.sh", "check.sh"])
def test_scripts_are_executable_bash(script):
    path = PACKAGING / script
    assert os.access(path, os.X_OK)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_build_refuses_to_run_without_a_working_interpreter(tmp_path):
    # No build starts: it stops at the model check or at the PyInstaller check, both before PyInstaller runs.
    env = {**os.environ, "PYTHON": "/bin/false", "ALLOW_NO_MODEL": "1"}
    result = subprocess.run(
        ["bash", str(PACKAGING / "build.sh")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert "PyInstaller is not installed" in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux") or not shutil.which("strip"), reason="needs GNU strip")
def test_strip_binaries_strips_tensorflow_libraries_only(cfg, tmp_path):
    import _json  # any small ELF extension module will do

    elf = tmp_path / "src" / "lib.so"
    elf.parent.mkdir()
    shutil.copy2(_json.__file__, elf)
    not_elf = tmp_path / "src" / "broken.so"
    not_elf.write_bytes(b"not an ELF file")
    cache = tmp_path / "cache"
    entries = [
        ("tensorflow/python/lib.so", str(elf), "EXTENSION"),
        ("tensorflow/broken.so", str(not_elf), "BINARY"),
        ("cv2/lib.so", str(elf), "BINARY"),
        ("tensorflow/notes.txt", str(not_elf), "DATA"),
    ]
    result = cfg.strip_binaries(entries, cache)
    stripped = Path(result[0][1])
    assert stripped == cache / "tensorflow/python/lib.so"
    assert stripped.read_bytes()[:4] == b"\x7fELF" and stripped.stat().st_size <= elf.stat().st_size
    assert result[1:] == entries[1:]  # strip refused it: shipped as it was; other packages and data untouched
    assert [dest for dest, _, _ in result] == [dest for dest, _, _ in entries]
    before = stripped.stat().st_mtime_ns
    assert cfg.strip_binaries(entries, cache)[0][1] == str(stripped)
    assert stripped.stat().st_mtime_ns == before  # reused, not stripped again
