"""Worklist benchmark (issue 15): sort and filter 5,000 synthetic films in the Qt model, offscreen.

The real :class:`viewer.worklist_view.WorklistPanel` (filter bar, tree view, model) is shown
offscreen at 420 x 900 and fed synthetic entries: patients with one to three studies (DICOM-like,
grouped in a tree) or, with ``--flat``, films without a patient (a flat list). Every step runs
from the event loop, one at a time, and is followed by the repaint it causes; a 10 ms ``QTimer``
on the GUI thread measures how late the loop serves it (a stall). Each step's own time
(``ms``, repaint included) is recorded too, with its CPU time on the GUI thread (``cpu_ms``:
the work itself, whatever else the machine runs).

    python benchmarks/bench_worklist.py --entries 5000 --json out.json
    python benchmarks/bench_worklist.py --entries 5000 --flat

Steps: loading the entries; sorting by every column in both directions (the header, as a click
does); "most urgent first" and "as opened"; each filter of the bar and clearing it; a batch of
300 verdicts (one re-arrangement); one result arriving; 200 current-film changes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

CLASSES = ("COVID-19", "Normal", "Pneumonia")


def synthetic_entries(n: int, flat: bool, seed: int = 0) -> list:
    from viewer.worklist import WorklistEntry

    rng = random.Random(seed)
    entries = []
    patient = study = 0
    films_left_in_study = 0
    for i in range(n):
        if not flat and films_left_in_study == 0:
            if rng.random() < 0.45 or patient == 0:
                patient += 1
            study += 1
            films_left_in_study = rng.randint(1, 3)
        films_left_in_study -= 1
        abstained = rng.random() < 0.05
        label = None if abstained else rng.choice(CLASSES)
        read = rng.random() < 0.3
        entries.append(
            WorklistEntry(
                doc_id=i + 1,
                file_name=f"film_{i:05d}.dcm" if not flat else f"film_{i:05d}.png",
                patient="" if flat else f"PID-{patient:05d}",
                study="" if flat else f"1.2.826.0.1.{study}",
                study_date="" if flat else f"20{rng.randint(15, 25)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                study_label="" if flat else f"study {study}",
                ai_label=label,
                ai_probability=None if abstained else rng.uniform(0.34, 1.0),
                abstained=abstained,
                warning=rng.random() < 0.03,
                read=read,
                agreement=rng.choice(("agree", "disagree")) if read else None,
                position=i,
                badge="No AI result" if abstained else str(label),
            )
        )
    return entries


def run(n: int, flat: bool) -> dict:
    from dataclasses import replace

    from PySide6.QtCore import QElapsedTimer, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from viewer.worklist_model import COLUMNS
    from viewer.worklist_view import WorklistPanel

    app = QApplication.instance() or QApplication(sys.argv)
    thumb = (np.add.outer(np.arange(64), np.arange(64)) * 2 % 256).astype(np.uint8)
    thumbs_made: list[int] = []
    panel = WorklistPanel(lambda doc_id: thumbs_made.append(doc_id) or thumb)
    panel.resize(420, 900)
    panel.show()
    entries = synthetic_entries(n, flat)
    rng = random.Random(1)
    header = panel.view.header()

    steps: list[tuple[str, object]] = [("load", lambda: panel.model.set_entries(entries))]
    for column, (title, _key, _tip) in enumerate(COLUMNS):
        for order, word in ((Qt.SortOrder.AscendingOrder, "asc"), (Qt.SortOrder.DescendingOrder, "desc")):
            steps.append((f"sort {title} {word}", lambda c=column, o=order: header.setSortIndicator(c, o)))
    steps += [
        ("order most urgent first", lambda: panel.order_box.setCurrentText("Most urgent first")),
        ("filter text 'PID-0001' / 'film_0001'", lambda: panel.search.setText("PID-0001" if not flat else "film_0001")),
        ("filter text cleared", lambda: panel.search.setText("")),
        ("filter class COVID-19", lambda: panel.class_box.setCurrentText("COVID-19")),
        ("filter class No AI result", lambda: panel.class_box.setCurrentText("No AI result")),
        ("filter class any", lambda: panel.class_box.setCurrentIndex(0)),
        ("filter unread", lambda: panel.read_box.setCurrentText("Unread")),
        ("filter disagree (and unread: none)", lambda: panel.agreement_box.setCurrentText("Disagrees with AI")),
        ("filter read and unread", lambda: panel.read_box.setCurrentText("Read: any")),
        ("filter any verdict", lambda: panel.agreement_box.setCurrentIndex(0)),
        ("filter flagged", lambda: panel.flagged_box.setChecked(True)),
        ("filter flagged off", lambda: panel.flagged_box.setChecked(False)),
        (
            "300 verdicts in one batch (attention order: re-arranged)",
            lambda: panel.model.update_entries(
                [replace(e, read=True, agreement="agree") for e in rng.sample(entries, 300)]
            ),
        ),
        ("order as opened", lambda: panel.order_box.setCurrentText("As opened")),
        ("one result arrives (same arrangement)", lambda: panel.model.update_entries([replace(entries[7], badge="x")])),
    ]
    for k in range(200):
        steps.append((f"current film {k}", lambda: panel.select_document(rng.randint(1, n))))

    timings: list[tuple[str, float]] = []
    state = {"last": 0.0, "max_stall": 0.0, "over_100": 0, "step": 0}
    clock = QElapsedTimer()
    clock.start()
    ticker = QTimer()
    ticker.setInterval(10)

    def tick() -> None:
        now = clock.nsecsElapsed() / 1e6
        if state["last"]:
            late = now - state["last"] - 10.0
            state["max_stall"] = max(state["max_stall"], late)
            state["over_100"] += late > 100.0
        state["last"] = now

    def next_step() -> None:
        if state["step"] >= len(steps):
            QTimer.singleShot(50, app.quit)
            return
        name, fn = steps[state["step"]]
        state["step"] += 1
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        panel.view.viewport().repaint()  # the repaint the step causes, inside its time
        timings.append((name, (time.perf_counter() - t0) * 1000.0, (time.thread_time() - c0) * 1000.0))
        QTimer.singleShot(20, next_step)

    ticker.timeout.connect(tick)
    ticker.start()
    QTimer.singleShot(100, next_step)
    app.exec()
    ticker.stop()
    named = [(k, v) for k, v, _c in timings if not k.startswith("current film")]
    current = [v for k, v, _c in timings if k.startswith("current film")]
    cpu = {k: c for k, _v, c in timings}
    return {
        "entries": n,
        "grouped": not flat,
        "top_level_rows": panel.model.rowCount(),
        "max_stall_ms": round(state["max_stall"], 1),
        "stalls_over_100ms": int(state["over_100"]),
        "slowest_step": max(named, key=lambda kv: kv[1])[0],
        "slowest_step_ms": round(max(v for _k, v in named), 1),
        "current_film_max_ms": round(max(current), 1),
        "thumbnails_made": len(set(thumbs_made)),
        # CPU time of the GUI thread in each step: the work itself, without waiting for a busy machine.
        "slowest_step_cpu": max(cpu, key=cpu.get),
        "slowest_step_cpu_ms": round(max(cpu.values()), 1),
        "load_average": round(os.getloadavg()[0], 2),
        "steps_ms": {k: round(v, 1) for k, v in named},
        "steps_cpu_ms": {k: round(c, 1) for k, c in cpu.items() if not k.startswith("current film")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--flat", action="store_true", help="films without a patient: a flat list")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    figures = run(args.entries, args.flat)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if figures["max_stall_ms"] <= 100.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
