"""Model folders: the one reader, checker and writer of ``model.keras`` + ``model.json`` (+ ``README.md``).

Both kinds of model the app uses live in such a folder: the classifier bundle
(:mod:`inference.bundle`) and the lung model (:mod:`inference.lungs`). Everything they have
in common is here, once, in the spirit of keras-hub's one loader/saver:

* **Reading ``model.json``** (:func:`read_description`): a size cap, a nesting-depth cap, no
  ``NaN``/``Infinity`` where a number is checked, and typed field readers (:func:`text`,
  :func:`whole_number`, :func:`number`, :func:`flag`, :func:`text_list`, :func:`mapping`)
  that give one clear :class:`BundleError` naming the field, never a ``TypeError`` from deep
  inside the app. :func:`preprocessing_from` range-checks every preprocessing parameter that
  reaches OpenCV or numpy (``clahe_tiles: 0`` used to kill the process with SIGFPE).
* **Loading ``model.keras``** (:func:`load_network`): the archive is checked before Keras
  extracts it (member count, declared sizes, compression ratio: a 2 MB file must not unpack
  2 GB into the temp folder), Keras loads it with ``safe_mode=True`` (no Python lambdas, no
  arbitrary objects), and the network must have one input and one output of the shapes the
  description promises, so a wrong model is refused at load, not mid-batch.
* **Writing** (:func:`write_model_folder`): everything goes to a hidden temporary sibling
  that is read back and then renamed into place; an existing model is replaced only when
  asked, and only once the new one is complete. A short ``README.md`` card is written unless
  the caller supplies one.
* **Stale temporary folders** left by a hard kill while saving are removed at start
  (:func:`clean_stale_temp_folders`): only ours (by name), only old ones.

No TensorFlow is imported until a network is loaded or saved.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.preprocess import PreprocessConfig

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "BundleError",
    "MODEL_FILE",
    "INFO_FILE",
    "CARD_FILE",
    "MAX_INFO_BYTES",
    "MAX_DEPTH",
    "check_folder",
    "read_description",
    "text",
    "whole_number",
    "number",
    "flag",
    "text_list",
    "mapping",
    "format_version",
    "preprocessing_from",
    "check_preprocessing",
    "check_archive",
    "load_network",
    "write_model_folder",
    "card_markdown",
    "clean_stale_temp_folders",
    "is_stale_temp_name",
    "CONTENT_HASHES_FILE",
    "content_hashes_text",
    "read_content_hashes",
]

MODEL_FILE = "model.keras"
INFO_FILE = "model.json"
CARD_FILE = "README.md"

# model.json: the shipped ones are ~20 KB (the training history is the bulk).
# The sha256 of every training image's file bytes, one per line, sorted: a model folder that
# has it (``training.data.content_hashes`` in model.json names it) lets an adaptation leave
# out local films the model was already trained on. Older folders have none: "not checked".
CONTENT_HASHES_FILE = "training_hashes.txt"
_HASH_LINE = re.compile(r"^[0-9a-f]{64}$")
MAX_HASHES = 10_000_000

MAX_INFO_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 16  # nesting of objects/lists; the shipped files use 6
MAX_STRING = 100_000  # any one string anywhere in model.json
MAX_ITEMS = 100_000  # any one list or object anywhere in model.json
MAX_KEY = 2000  # any one key (the lung card keys licence texts)

# model.keras is a zip (config.json, metadata.json, model.weights.h5, maybe assets/).
MAX_ARCHIVE_MEMBERS = 256
MAX_UNPACKED_BYTES = 2 * 1024**3 - 1  # under 2 GiB in all, as declared by the archive
MAX_RATIO = 20.0  # unpacked / packed, for archives that unpack to more than RATIO_FLOOR
RATIO_FLOOR = 32 * 1024 * 1024  # Keras stores members uncompressed (ratio 1); small JSON may compress well
# config.json, read before Keras builds the network (building allocates every weight): the
# shipped configs are 30-60 KB and 11 levels deep.
MAX_CONFIG_BYTES = 32 * 1024 * 1024
MAX_CONFIG_DEPTH = 64
MAX_LAYER_WIDTH = 65_536  # units, filters, heads...: more would allocate gigabytes before any check
MAX_SHAPE_SIDE = 8192  # any declared input side
_WIDTH_KEYS = frozenset({"units", "filters", "output_dim", "input_dim", "num_heads", "key_dim", "value_dim"})
_SHAPE_KEYS = frozenset({"batch_shape", "batch_input_shape", "input_shape", "shape"})

# Preprocessing ranges: each parameter reaches OpenCV or numpy, where a bad value crashes
# the process (clahe_tiles 0: SIGFPE), raises deep inside (size 0, NaN margin) or exhausts
# memory (tiles or sizes in the millions).
SIZE_RANGE = (8, 2048)
CHANNEL_CHOICES = (1, 3)
CLAHE_CLIP_RANGE = (0.01, 100.0)
CLAHE_TILES_RANGE = (1, 64)
CROP_CHOICES = ("none", "lungs")
CROP_MARGIN_RANGE = (0.0, 0.5)

# Characters of identifiers shown in the app and used in file names.
NAME_RE = re.compile(r"^[^\x00-\x1f\x7f<>\"\\`\s][^\x00-\x1f\x7f<>\"\\`]{0,99}$")
VERSION_RE = re.compile(r"^[\w][\w.+\-]{0,39}$")
IDENT_RE = re.compile(r"^[A-Za-z0-9_][\w.:/+\-]{0,127}$")
CLASS_RE = re.compile(r"^[^\x00-\x1f\x7f<>\"\\`\s][^\x00-\x1f\x7f<>\"\\`]{0,63}$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

STALE_AFTER_S = 3600.0  # a save takes seconds; an hour-old temporary folder is left from a kill
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:[a-z0-9_]{8}\.(?:tmp|import)|old)$")
REPORT_TEMP_PREFIX = "cxr-train-report-"


class BundleError(Exception):
    """A model folder is missing, incomplete, unreadable or unsafe; the message says which."""


# ---------------------------------------------------------------------------------------------
# model.json


def check_folder(path: str | os.PathLike[str], error: type[BundleError] = BundleError) -> Path:
    """``path`` as a model folder holding ``model.json`` and ``model.keras`` (regular files)."""
    p = Path(path)
    if not p.exists():
        raise error(f"Model folder not found: {p}")
    if not p.is_dir():
        raise error(f"A model is a folder holding {MODEL_FILE} and {INFO_FILE}; {p} is a file.")
    if not (p / INFO_FILE).is_file():
        raise error(f"{p} is not a model folder: {INFO_FILE} is missing.")
    if not (p / MODEL_FILE).is_file():
        raise error(f"The model folder {p} is incomplete: {MODEL_FILE} is missing.")
    return p


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def read_description(path: str | os.PathLike[str], error: type[BundleError] = BundleError) -> dict[str, Any]:
    """The JSON object in ``path/model.json``, after the folder, size and nesting checks."""
    p = check_folder(path, error)
    info_path = p / INFO_FILE
    try:
        size = info_path.stat().st_size
        if size > MAX_INFO_BYTES:
            raise error(f"{info_path} is {size:,} bytes; a model description may hold at most {MAX_INFO_BYTES:,}.")
        raw = info_path.read_bytes()[: MAX_INFO_BYTES + 1]
        data = json.loads(raw.decode("utf-8"))
    except error:
        raise
    except RecursionError:
        raise error(f"{info_path} cannot be read: it is nested too deeply.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{info_path} cannot be read: {exc}") from None
    check_tree(data, str(info_path), error)
    if not isinstance(data, dict):
        raise error(f"{info_path} does not hold a JSON object.")
    return data


def check_tree(data: Any, where: str, error: type[BundleError] = BundleError) -> None:
    """Depth, string and container size limits over a whole JSON value (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise error(f"{where} is nested too deeply (more than {MAX_DEPTH} levels).")
            if len(value) > MAX_ITEMS:
                raise error(f"{where} holds a list or object with more than {MAX_ITEMS:,} entries.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and len(key) > MAX_KEY:
                    raise error(f"{where} holds a key longer than {MAX_KEY:,} characters.")
                stack.append((item, depth + 1))
        elif isinstance(value, str) and len(value) > MAX_STRING:
            raise error(f"{where} holds a text longer than {MAX_STRING:,} characters.")


def _field_error(error: type[BundleError], where: str, key: str, what: str, value: Any) -> BundleError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return error(f"{where}: {key!r} must be {what}, not {shown}.")


_MISSING = object()


def text(
    data: Mapping[str, Any],
    key: str,
    where: str,
    *,
    required: bool = False,
    default: str = "",
    max_len: int = 2000,
    pattern: re.Pattern[str] | None = None,
    error: type[BundleError] = BundleError,
) -> str:
    """A string field: present when required, no control characters, at most ``max_len`` long."""
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None or (required and value == ""):
        if required:
            raise error(f"{where} lacks the required field {key!r}.")
        return default
    if not isinstance(value, str):
        raise _field_error(error, where, key, "text", value)
    if len(value) > max_len:
        raise error(f"{where}: {key!r} is longer than {max_len} characters.")
    if _CONTROL_RE.search(value):
        raise error(f"{where}: {key!r} holds control characters.")
    if pattern is not None and not pattern.match(value):
        raise error(f"{where}: {key!r} holds characters that are not allowed: {value[:60]!r}.")
    return value


def whole_number(
    data: Mapping[str, Any],
    key: str,
    where: str,
    lo: int,
    hi: int,
    *,
    default: int | None = None,
    error: type[BundleError] = BundleError,
) -> int:
    """An integer field in ``[lo, hi]`` (booleans and texts are not numbers)."""
    value = data.get(key, _MISSING)
    if value is _MISSING:
        if default is None:
            raise error(f"{where} lacks the required field {key!r}.")
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _field_error(error, where, key, "a whole number", value)
    if not lo <= value <= hi:
        raise error(f"{where}: {key!r} must be between {lo} and {hi}, not {value}.")
    return value


def number(
    data: Mapping[str, Any],
    key: str,
    where: str,
    lo: float,
    hi: float,
    *,
    default: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    error: type[BundleError] = BundleError,
) -> float:
    """A finite number field in ``[lo, hi]`` (or the open interval at either end)."""
    value = data.get(key, _MISSING)
    if value is _MISSING:
        if default is None:
            raise error(f"{where} lacks the required field {key!r}.")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _field_error(error, where, key, "a finite number", value)
    value = float(value)
    if value < lo or value > hi or (open_low and value == lo) or (open_high and value == hi):
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        raise error(f"{where}: {key!r} must lie in {left}{lo:g}, {hi:g}{right}, not {value:g}.")
    return value


def flag(
    data: Mapping[str, Any], key: str, where: str, *, default: bool = False, error: type[BundleError] = BundleError
) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise _field_error(error, where, key, "true or false", value)
    return value


def text_list(
    data: Mapping[str, Any],
    key: str,
    where: str,
    *,
    min_items: int = 0,
    max_items: int = 100,
    max_len: int = 64,
    pattern: re.Pattern[str] | None = None,
    unique: bool = True,
    default: list[str] | None = None,
    error: type[BundleError] = BundleError,
) -> list[str]:
    """A list of non-empty texts (class names, output names)."""
    value = data.get(key, _MISSING)
    if value is _MISSING and default is not None:
        return list(default)
    if not isinstance(value, list) or not min_items <= len(value) <= max_items:
        raise _field_error(error, where, key, f"a list of {min_items} to {max_items} names", value)
    out = []
    for item in value:
        if not isinstance(item, str) or not item or len(item) > max_len or _CONTROL_RE.search(item):
            raise _field_error(error, where, key, f"a list of names (1 to {max_len} characters)", value)
        if pattern is not None and not pattern.match(item):
            raise error(f"{where}: {key!r} holds a name with characters that are not allowed: {item[:60]!r}.")
        out.append(item)
    if unique and len(set(out)) != len(out):
        raise (
            error(f"{where} names a class twice: {out}.")
            if key == "class_names"
            else error(f"{where}: {key!r} names an entry twice: {out}.")
        )
    return out


def mapping(data: Mapping[str, Any], key: str, where: str, *, error: type[BundleError] = BundleError) -> dict[str, Any]:
    """An optional object field (``training``, ``metrics``): absent or null gives ``{}``."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _field_error(error, where, key, "an object ({...})", value)
    return dict(value)


def format_version(data: Mapping[str, Any], where: str, newest: int, error: type[BundleError] = BundleError) -> int:
    """``format_version``: a whole number this app can read (absent means 1)."""
    value = data.get("format_version", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _field_error(error, where, "format_version", "a whole number (1 or more)", value)
    if value > newest:
        raise error(
            f"{where} was written by a newer version of the app (format {value}, this app reads up to "
            f"{newest}). Update the app."
        )
    return value


def preprocessing_from(data: Any, where: str, error: type[BundleError] = BundleError) -> PreprocessConfig:
    """``preprocessing`` as a :class:`PreprocessConfig`, every parameter type- and range-checked."""
    if not isinstance(data, dict) or not data:
        raise error(f"{where} lacks the required field 'preprocessing' (an object).")
    known = set(PreprocessConfig.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise error(
            f"{where} has invalid preprocessing parameters: unknown preprocessing parameters: "
            f"{', '.join(sorted(map(str, unknown)))}"
        )
    w = f"{where} (preprocessing)"
    d = PreprocessConfig()
    channels = whole_number(data, "channels", w, 1, 3, default=d.channels, error=error)
    if channels not in CHANNEL_CHOICES:
        raise error(f"{w}: 'channels' must be 1 or 3, not {channels}.")
    crop = data.get("crop", d.crop)
    if crop not in CROP_CHOICES:
        raise _field_error(error, w, "crop", " or ".join(repr(c) for c in CROP_CHOICES), crop)
    return PreprocessConfig(
        size=whole_number(data, "size", w, *SIZE_RANGE, default=d.size, error=error),
        channels=channels,
        clahe=flag(data, "clahe", w, default=d.clahe, error=error),
        clahe_clip=number(data, "clahe_clip", w, *CLAHE_CLIP_RANGE, default=d.clahe_clip, error=error),
        clahe_tiles=whole_number(data, "clahe_tiles", w, *CLAHE_TILES_RANGE, default=d.clahe_tiles, error=error),
        crop=crop,
        crop_margin=number(data, "crop_margin", w, *CROP_MARGIN_RANGE, default=d.crop_margin, error=error),
    )


def check_preprocessing(config: PreprocessConfig, where: str, error: type[BundleError] = BundleError) -> None:
    """The same checks on a config built in code (before it is saved with a model)."""
    preprocessing_from(config.to_dict(), where, error)


def check_input_block(data: Mapping[str, Any], pre: PreprocessConfig, where: str, error: type[BundleError]) -> None:
    """``input`` (optional) repeats size and channels for readers; it must agree with ``preprocessing``."""
    block = data.get("input")
    if block is None:
        return
    if not isinstance(block, dict):
        raise _field_error(error, where, "input", "an object ({...})", block)
    size = whole_number(block, "size", f"{where} (input)", *SIZE_RANGE, default=pre.size, error=error)
    channels = whole_number(block, "channels", f"{where} (input)", 1, 3, default=pre.channels, error=error)
    if (size, channels) != (pre.size, pre.channels):
        raise error(
            f"{where}: 'input' says {size} px, {channels} channel(s); 'preprocessing' says {pre.size} px, "
            f"{pre.channels} channel(s)."
        )


# ---------------------------------------------------------------------------------------------
# model.keras


def check_archive(path: str | os.PathLike[str], error: type[BundleError] = BundleError, hint: str = "") -> None:
    """Refuse a ``model.keras`` whose zip would unpack to too much, before anything extracts it.

    ``hint`` is added to the message of an archive that cannot be read at all."""
    p = Path(path)
    try:
        packed = p.stat().st_size
        with zipfile.ZipFile(p) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise error(f"The network in {p} cannot be loaded: it is not a Keras model archive ({exc}).{hint}") from None
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise error(f"{p} holds {len(members):,} files; a Keras model holds a handful. Refused.")
    unpacked = 0
    for m in members:
        if m.file_size < 0 or m.compress_size < 0:
            raise error(f"{p} declares a negative size. Refused.")
        unpacked += m.file_size
    if unpacked > MAX_UNPACKED_BYTES:
        raise error(f"{p} would unpack to {unpacked / 1024**3:.1f} GB; at most 2 GB is accepted. Refused.")
    if unpacked > RATIO_FLOOR and unpacked > MAX_RATIO * max(packed, 1):
        raise error(
            f"{p} would unpack {packed / 1024**2:.1f} MB into {unpacked / 1024**2:,.0f} MB "
            f"(ratio {unpacked / max(packed, 1):.0f}); a Keras model is not that compressible. Refused."
        )
    config = next((m for m in members if m.filename == "config.json"), None)
    if config is not None:
        _check_network_config(p, config, error)


def _check_network_config(p: Path, member: zipfile.ZipInfo, error: type[BundleError]) -> None:
    """Layer widths and input shapes in ``config.json`` are sane, before Keras builds (allocates) them."""
    if member.file_size > MAX_CONFIG_BYTES:
        raise error(f"{p}: its network description is {member.file_size:,} bytes. Refused.")
    try:
        with zipfile.ZipFile(p) as archive:
            config = json.loads(archive.read(member).decode("utf-8"))
    except RecursionError:
        raise error(f"{p}: its network description is nested too deeply. Refused.") from None
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError) as exc:
        raise error(f"The network in {p} cannot be loaded: its description cannot be read ({exc}).") from None
    stack: list[tuple[Any, int]] = [(config, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise error(f"{p}: its network description is nested too deeply. Refused.")
        if isinstance(value, dict):
            for key, item in value.items():
                if key in _WIDTH_KEYS and isinstance(item, int) and not isinstance(item, bool):
                    if not 0 <= item <= MAX_LAYER_WIDTH:
                        raise error(f"{p}: a layer declares {key} = {item:,}; at most {MAX_LAYER_WIDTH:,}. Refused.")
                elif key in _SHAPE_KEYS and isinstance(item, list):
                    sides = [v for v in item if isinstance(v, int) and not isinstance(v, bool)]
                    if any(not 0 <= v <= MAX_SHAPE_SIDE for v in sides):
                        raise error(
                            f"{p}: an input declares the shape {item[:6]}; sides up to {MAX_SHAPE_SIDE}. Refused."
                        )
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def load_network(
    folder: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int],
    outputs: int,
    output_rank: int,
    saved_with: str = "",
    error: type[BundleError] = BundleError,
    what: str = "network",
) -> keras.Model:
    """Load ``folder/model.keras`` safely and check it has one input and one output as described.

    ``input_shape`` is ``(S, S, C)``; the output must have rank ``output_rank`` (batch included)
    and ``outputs`` values on its last axis. ``saved_with`` (the Keras version in the
    description) makes the message of a failed load name both versions.
    """
    import keras  # deferred: importing TensorFlow takes seconds

    model_path = Path(folder) / MODEL_FILE
    hint = ""
    if saved_with and saved_with != keras.__version__:
        # Any version difference may be the cause (layers change between minor releases too).
        hint = f" It was saved with Keras {saved_with}; this app has Keras {keras.__version__}."
    check_archive(model_path, error, hint)
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types (ValueError, OSError, zipfile errors...)
        raise error(f"The {what} in {model_path} cannot be loaded: {exc}.{hint}") from None
    check_network(
        model, str(model_path), input_shape=input_shape, outputs=outputs, output_rank=output_rank, error=error
    )
    return model


def check_network(
    model: Any,
    where: str,
    *,
    input_shape: tuple[int, int, int],
    outputs: int,
    output_rank: int,
    error: type[BundleError] = BundleError,
) -> None:
    """One input of ``(None, *input_shape)``, one output of rank ``output_rank`` ending in ``outputs``."""
    ins, outs = list(getattr(model, "inputs", None) or []), list(getattr(model, "outputs", None) or [])
    if len(ins) != 1 or len(outs) != 1:
        raise error(
            f"{where} has {len(ins)} input(s) and {len(outs)} output(s); the app needs a network with "
            "exactly one image input and one output."
        )
    got_in = tuple(ins[0].shape[1:])
    if got_in != tuple(input_shape):
        raise error(f"{where} takes inputs of shape {got_in}, but {INFO_FILE} says {tuple(input_shape)}.")
    shape = tuple(outs[0].shape)
    if len(shape) != output_rank or shape[-1] != outputs:
        raise error(f"{where} gives outputs of shape {shape[1:]}, but {INFO_FILE} names {outputs} output(s).")


# ---------------------------------------------------------------------------------------------
# Writing


def _safe_member(name: str) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"extra file name {name!r} must be a relative path inside the model folder")
    return rel


def card_markdown(title: str, description: str = "", facts: Iterable[tuple[str, str]] = ()) -> str:
    """A short ``README.md`` model card: title, description, facts, the research-use notice."""
    lines = [f"# {title}", "", "**Research use only, not for clinical diagnosis.**", ""]
    if description:
        lines += [description, ""]
    rows = [(k, v) for k, v in facts if v]
    if rows:
        lines += [f"- {k}: {v}" for k, v in rows] + [""]
    lines += [f"The full description (training data, settings, metrics) is in `{INFO_FILE}`.", ""]
    return "\n".join(lines)


def write_model_folder(
    out_dir: str | os.PathLike[str],
    save_network: Callable[[Path], None],
    description: dict[str, Any],
    *,
    read_back: Callable[[Path], Any],
    card: str | None = None,
    extra_files: Mapping[str, str | os.PathLike[str]] | None = None,
    extra_texts: Mapping[str, str] | None = None,
    overwrite: bool = False,
    error: type[BundleError] = BundleError,
) -> Path:
    """Write a model folder atomically and return its resolved path.

    ``save_network(path)`` writes ``model.keras``; ``description`` becomes ``model.json``;
    ``card`` becomes ``README.md`` (unless ``extra_files``/``extra_texts`` hold one);
    ``extra_files`` maps names inside the folder (``report/report.md``) to files to copy and
    ``extra_texts`` to texts. ``read_back(tmp)`` must accept the finished temporary folder
    (never publish a model we could not read back). An existing non-empty ``out_dir`` is
    replaced only with ``overwrite=True``, and only after the new folder is complete.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise error(f"{out} is a file; a model is written to a folder.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise error(f"{out} already exists; choose another folder or allow overwriting.")
    members = {str(_safe_member(n)): src for n, src in (extra_files or {}).items()}
    texts = {str(_safe_member(n)): t for n, t in (extra_texts or {}).items()}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_folders(out.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise error(f"The model could not be written to {out}: {exc.strerror or exc}. Nothing was replaced.") from None
    try:
        save_network(tmp / MODEL_FILE)
        (tmp / INFO_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        for name, src in members.items():
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        for name, body in texts.items():
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(body, encoding="utf-8")
        if card is not None and CARD_FILE not in members and CARD_FILE not in texts:
            (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        read_back(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:  # a full disk or a read-only folder: the old model is still in place
        shutil.rmtree(tmp, ignore_errors=True)
        reason = exc.strerror or str(exc)
        raise error(f"The model could not be written to {out}: {reason}. Nothing was replaced.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------------------------
# Training-data content hashes


def content_hashes_text(hashes: Iterable[str]) -> str:
    """The body of :data:`CONTENT_HASHES_FILE` (sorted, de-duplicated, lower-case hex)."""
    return "".join(f"{h}\n" for h in sorted({h.lower() for h in hashes}))


def read_content_hashes(folder: str | os.PathLike[str], description: Mapping[str, Any]) -> set[str] | None:
    """The training images' sha256 set the folder carries, or None when it carries none (an older
    folder) or the file is unreadable: the caller then says "not checked", never "no overlap"."""
    training = description.get("training")
    data = training.get("data") if isinstance(training, Mapping) else None
    entry = data.get("content_hashes") if isinstance(data, Mapping) else None
    if not isinstance(entry, Mapping) or entry.get("file") != CONTENT_HASHES_FILE:
        return None
    path = Path(folder) / CONTENT_HASHES_FILE
    try:
        if path.stat().st_size > MAX_HASHES * 65:
            return None
        lines = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if not all(_HASH_LINE.match(line) for line in lines):
        return None
    return set(lines)


# ---------------------------------------------------------------------------------------------
# Stale temporary folders


def is_stale_temp_name(name: str) -> bool:
    """Does ``name`` look like one of our hidden temporary folders (``.NAME.abcd1234.tmp``, ``.NAME.old``)?"""
    return _TEMP_RE.match(name) is not None


def clean_stale_temp_folders(
    *folders: str | os.PathLike[str], max_age_s: float = STALE_AFTER_S, reports: bool = False
) -> list[Path]:
    """Remove our temporary folders older than ``max_age_s`` in ``folders`` (and, with
    ``reports``, ``cxr-train-report-*`` in the system temp folder). Returns what was removed.

    A hard kill while saving leaves ``.NAME.xxxxxxxx.tmp`` beside the model folder; a kill
    between the two renames of a replacement leaves the working model as ``.NAME.old`` with
    ``NAME`` missing: that one is put back, not deleted. Only directories (never links) whose
    names match, and only old ones, so a save in progress elsewhere is never touched.
    """
    now = time.time()
    removed: list[Path] = []

    def old_dir(p: Path) -> bool:
        try:
            st = p.lstat()
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and now - st.st_mtime > max_age_s

    candidates: list[Path] = []
    for folder in folders:
        root = Path(folder)
        try:
            with os.scandir(root) as entries:
                candidates += [root / e.name for e in entries if _TEMP_RE.match(e.name)]
        except OSError:
            continue
    if reports:
        tmp_root = Path(tempfile.gettempdir())
        uid = os.getuid() if hasattr(os, "getuid") else None
        with contextlib.suppress(OSError), os.scandir(tmp_root) as entries:
            for e in entries:
                if e.name.startswith(REPORT_TEMP_PREFIX) and (
                    uid is None or e.stat(follow_symlinks=False).st_uid == uid
                ):
                    candidates.append(tmp_root / e.name)
    for p in candidates:
        if not old_dir(p):
            continue
        m = _TEMP_RE.match(p.name)
        if m is not None and p.name.endswith(".old"):
            target = p.with_name(m.group("name"))
            if not target.exists() and (p / MODEL_FILE).is_file() and (p / INFO_FILE).is_file():
                with contextlib.suppress(OSError):
                    os.replace(p, target)  # the working model, put back where it belongs
                continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed
