#!/usr/bin/env bash
# Build the one-folder bundle dist/cxr-viewer/ (run from anywhere; extra arguments go to PyInstaller,
# e.g. --clean to drop PyInstaller's analysis cache).
#
#   PYTHON=...          interpreter with the app's dependencies and PyInstaller (default: .venv/bin/python)
#   NICE=19             CPU priority of the build (the default leaves the machine to other work)
#   ALLOW_NO_MODEL=1    build even though resources/models/default/ is missing (for testing the
#                       packaging with CXR_VIEWER_MODEL_DIR; such a bundle cannot ship)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
NICE="${NICE:-19}"
cd "$ROOT"

if [[ ! -f resources/models/default/model.keras && "${ALLOW_NO_MODEL:-0}" != 1 ]]; then
    echo "build.sh: resources/models/default/model.keras is missing: the bundle would have no model" >&2
    echo "          (set ALLOW_NO_MODEL=1 to build anyway, for packaging tests only)" >&2
    exit 2
fi
"$PYTHON" -c "import PyInstaller" 2>/dev/null || {
    echo "build.sh: PyInstaller is not installed for $PYTHON (pip install -e '.[dev]')" >&2
    exit 2
}

# The spec reads resources/ at build time; stale bundles are replaced, never merged.
exec nice -n "$NICE" "$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build/pyinstaller" \
    "$@" "$ROOT/packaging/cxr_viewer.spec"
