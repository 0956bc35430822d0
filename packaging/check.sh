#!/usr/bin/env bash
# Build the bundle, then prove the frozen app works where a user would run it: the frozen
# --self-test (model, PNG/JPEG and JPEG 2000 DICOM decode, prediction, Grad-CAM, every export),
# a start of the viewer without arguments, the bundle's contents, and the size and time targets.
# Exits non-zero when any of these fails.
#
#   SKIP_BUILD=1            check the existing dist/cxr-viewer/ without rebuilding
#   CXR_VIEWER_MODEL_DIR=D  self-test against model folder D instead of the bundled model
#                           (lets the packaging be tested before a model exists; implies ALLOW_NO_MODEL=1)
#   PYTHON, NICE            as for build.sh; other arguments are passed to PyInstaller
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
APP_DIR="$ROOT/dist/cxr-viewer"
APP="$APP_DIR/cxr-viewer"
INTERNAL="$APP_DIR/_internal"
MAX_BYTES=1500000000   # 1.5 GB
MAX_SELFTEST_S=30
failures=()

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
fail() { failures+=("$1"); echo "FAIL: $1" >&2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    [[ -n "${CXR_VIEWER_MODEL_DIR:-}" ]] && export ALLOW_NO_MODEL=1
    t0=$(now)
    "$ROOT/packaging/build.sh" "$@" || { echo "check.sh: the build failed" >&2; exit 1; }
    build_s="$(since "$t0") s"
else
    build_s="skipped (SKIP_BUILD=1)"
fi
[[ -x "$APP" ]] || { echo "check.sh: no bundle at $APP" >&2; exit 1; }

# Run from an unrelated folder with a fresh home: resources must be found relative to the
# bundle, and nothing from the source tree or the user's settings may help.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/home" "$work/config"
cd "$work"
run_env=(env -u PYTHONPATH -u PYTHONHOME QT_QPA_PLATFORM=offscreen CXR_VIEWER_HOME="$work/home" XDG_CONFIG_HOME="$work/config")

# Wall and CPU time: on a machine shared with other work the wall time says little on its own.
TIMEFORMAT='%R %U %S'
{ time "${run_env[@]}" timeout 300 "$APP" --self-test >"$work/selftest.json" 2>"$work/selftest.err"; } 2>"$work/selftest.time"
selftest_rc=$?
read -r selftest_s selftest_user selftest_sys <"$work/selftest.time"
selftest_cpu=$(awk -v u="$selftest_user" -v s="$selftest_sys" 'BEGIN { printf "%.1f", u + s }')
if [[ $selftest_rc -ne 0 ]]; then
    fail "frozen --self-test exited $selftest_rc"
    tail -n 30 "$work/selftest.err" >&2
fi

t0=$(now)
"${run_env[@]}" CXR_VIEWER_EXIT_AFTER_PAINT=1 timeout 120 "$APP" >"$work/viewer.out" 2>"$work/viewer.err"
viewer_rc=$?
viewer_s=$(since "$t0")
if [[ $viewer_rc -ne 0 ]]; then
    fail "frozen viewer (no arguments) exited $viewer_rc"
    tail -n 30 "$work/viewer.err" >&2
fi

# Contents: what must be there, and what must not.
if [[ -z "${CXR_VIEWER_MODEL_DIR:-}" ]]; then
    [[ -f "$INTERNAL/resources/models/default/model.keras" ]] || fail "bundled model missing"
fi
for model in "$ROOT"/resources/models/*/; do
    [[ -d "$model" ]] || continue
    name="$(basename "$model")"
    [[ -d "$INTERNAL/resources/models/$name" ]] || fail "model folder resources/models/$name is not in the bundle (rebuild?)"
done
compgen -G "$INTERNAL/resources/samples/*.png" >/dev/null || fail "PNG sample missing"
compgen -G "$INTERNAL/resources/samples/*.dcm" >/dev/null || fail "DICOM sample missing"
[[ -d "$INTERNAL/resources/icons" ]] || fail "icons missing"
[[ -d "$INTERNAL/pydicom/data/charset_files" ]] || fail "pydicom data files missing"
for dist in pylibjpeg pylibjpeg_libjpeg pylibjpeg_openjpeg pylibjpeg_rle; do
    compgen -G "$INTERNAL/${dist}-*.dist-info" >/dev/null || fail "$dist metadata (plugin entry points) missing"
done
for unwanted in PyQt5 PyQt6 PySide2 tensorboard tkinter pytest _pytest hypothesis data_store tests; do
    [[ -e "$INTERNAL/$unwanted" ]] && fail "$unwanted is in the bundle"
done
compgen -G "$INTERNAL/lib-dynload/_tkinter*" >/dev/null && fail "_tkinter is in the bundle"
for qtlib in Qml Quick WebEngineCore Pdf Multimedia 3DCore; do
    compgen -G "$INTERNAL/PySide6/Qt/lib/libQt6${qtlib}.so*" >/dev/null && fail "libQt6$qtlib is in the bundle"
done

size_bytes=$(du -sb "$APP_DIR" | cut -f1)
size_human=$(du -sh "$APP_DIR" | cut -f1)
[[ $size_bytes -lt $MAX_BYTES ]] || fail "bundle is $size_human, over the 1.5 GB target"
awk -v s="$selftest_s" -v m="$MAX_SELFTEST_S" 'BEGIN { exit !(s < m) }' \
    || fail "frozen self-test took $selftest_s s, over the $MAX_SELFTEST_S s target"

echo "== frozen --self-test summary =="
"$PYTHON" - "$work/selftest.json" <<'PY' || fail "the self-test summary reports a failure (or is not JSON)"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"ok={r['ok']}  total_s={r.get('total_s')}  device={r.get('device')}  frozen={r['versions'].get('frozen')}")
if "model" in r:
    m = r["model"]
    print(f"model: {m['name']} {m['version']} ({m['architecture']})")
for res in r.get("results", []):
    print(f"  {res['file']} [{res['format']}, {res['transfer_syntax']}] -> {res['label']}")
print("timings_s:", json.dumps(r["timings_s"]))
if "exports" in r:
    print("exports:", ", ".join(sorted(r["exports"])))
if not r["ok"]:
    print(f"failed at {r['failed_step']}: {r['error']}")
    sys.exit(1)
if r["versions"].get("frozen") != "true" or not any(x["format"] == "DICOM" for x in r.get("results", [])):
    sys.exit(1)
PY

echo "== check.sh figures =="
echo "bundle:            $APP_DIR"
echo "bundle size:       $size_human ($size_bytes bytes; target < 1.5 GB)"
echo "build time:        ${build_s}"
echo "frozen self-test:  ${selftest_s} s wall (target < ${MAX_SELFTEST_S} s), ${selftest_cpu} s CPU (user+sys), exit $selftest_rc"
echo "frozen viewer:     ${viewer_s} s to first paint and exit, exit $viewer_rc"
if [[ ${#failures[@]} -gt 0 ]]; then
    printf 'check.sh: %d problem(s):\n' "${#failures[@]}" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "check.sh: all checks passed"
