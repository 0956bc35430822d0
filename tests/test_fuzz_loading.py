"""A fuzz run that stays in CI: seeded mutations of real, synthetic and crafted files (the
codestream size bombs included), loaded under a 2 GB address-space cap in a subprocess.

The only promise checked: each file gives an image or an ImageLoadError in plain words,
quickly and within the memory cap. The 10,000-case run is ``benchmarks/fuzz_loading.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = 400
SEED = 20261201


def test_seeded_fuzz_gives_only_the_loader_error_within_time_and_memory():
    script = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); "
        "from benchmarks.fuzz_loading import run; "
        f"print(json.dumps(run({CASES}, {SEED}, memory_cap_gb=2.0, hang_s=30)))"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["cases"] == CASES
    assert figures["escapes"] == 0, figures["escape_examples"]
    assert figures["loaded"] + figures["refused"] == CASES
    assert figures["loaded"] >= 5 and figures["refused"] >= 100  # the corpus exercises both paths
    assert figures["max_case_seconds"] < 5.0, figures["slowest_case"]
    assert figures["max_rss_mb"] < 2048  # the cap above: a mutant inside the loader's size limits may use most of it
    assert figures["total_seconds"] < 20
