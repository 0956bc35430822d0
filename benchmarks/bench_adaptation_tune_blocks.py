"""How ``--adapt-blocks`` and its learning rate/anchor were chosen: CV inside the 200-film NIH pool only.

    .venv/bin/python benchmarks/bench_adaptation_tune_blocks.py [--folds 4]
    (after bench_adaptation.py base)

Like ``bench_adaptation_tune.py`` (the classification-layer settings), but fine-tuning the top
blocks (:func:`training.adapt.fit_top`): each fold fine-tunes on half of the pool's patients and
scores the other half and the other sources' reference images; the 338 NIH evaluation films of
``bench_adaptation.py`` are never touched. Rehearsal uses 100 per class of the base model's own
training images (``sets.json`` "train"), never the reference images. The block inputs are
computed once (cut at the second-to-last block: with ``blocks=1`` that block stays frozen).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_adaptation import CACHE, CLASSES, DATA, _cached, _nih_draws, _reference_labels, rehearsal_set
from inference.bundle import load_bundle
from training.adapt import balanced_accuracy, fit_top, top_outputs
from training.finetune import freeze_for_finetuning, split_at_block
from training.pipeline import class_weights, predict_arrays

ap = argparse.ArgumentParser()
ap.add_argument("--out", type=Path, default=Path("/work/runs/adapt"))
ap.add_argument("--folds", type=int, default=4)
ap.add_argument("--results", type=Path, default=Path("/work/runs/adapt2/tune_blocks.json"))
args = ap.parse_args()
out = args.out
sets = json.loads((out / "sets.json").read_text())
x_all, index = _cached(CACHE)
draws, _rest = _nih_draws(sets["nih"], [50, 100, 200])
pool = draws[200]
model, info = load_bundle(out / "base")
bottom, top, first = split_at_block(model, 2)
reh, yreh_names = zip(*rehearsal_set(sets["train"], DATA), strict=True)  # the same as bench_adaptation.py
fp = Path("/work/runs/adapt2/tune_blocks_h.npz")
t0 = time.time()
if fp.exists():
    z = np.load(fp)
    hpool, href, hreh = z["hpool"], z["href"], z["hreh"]
else:
    pre = info.preprocessing
    hpool = predict_arrays(bottom, np.stack([x_all[index[r["path"]]] for r in pool]), pre)
    href = predict_arrays(bottom, np.stack([x_all[index[p]] for p in sets["reference"]]), pre)
    hreh = predict_arrays(bottom, np.stack([x_all[index[p]] for p in reh]), pre)
    np.savez(fp, hpool=hpool, href=href, hreh=hreh)
print(f"block inputs {hpool.shape} {href.shape} {hreh.shape} in {time.time() - t0:.0f} s", flush=True)
ypool = np.array([CLASSES.index(r["label"]) for r in pool])
rl = _reference_labels(DATA, sets["reference"])
yref = np.array([CLASSES.index(rl[p]) for p in sets["reference"]])
yreh = np.array([CLASSES.index(c) for c in yreh_names])
pid = [r["patient_id"] or r["path"] for r in pool]
saved = model.get_weights()


def ba(h, y):
    return balanced_accuracy(y, np.argmax(top_outputs(top, h)[0], 1), 3)


base_ref = ba(href, yref)
frng = np.random.default_rng(5)  # the same folds as bench_adaptation_tune.py
patients = sorted(set(pid))
folds = []
for _ in range(args.folds):
    perm = frng.permutation(len(patients))
    half = set(np.array(patients)[perm[: len(patients) // 2]])
    tr = np.array([p in half for p in pid])
    folds.append((tr, ~tr))
# Every setting run (results in bench_adaptation.md). A first round on 2 folds (blocks=1, lr
# 1e-4, anchor 0.1, rehearsal 3 with labels: +0.068 on the pool's held-out half, -0.034 on the
# other sources) showed forgetting beyond the 0.02 limit; the rounds below pull harder, rehearse
# more, or distil the parent's own probabilities on the rehearsal images. Not run for lack of
# time: lr 3e-5 for 300 steps, two blocks.
configs = [
    dict(blocks=1, lr=1e-4, anchor=1.0, rw=3.0, steps=150, distill=False),
    dict(blocks=1, lr=1e-4, anchor=0.1, rw=10.0, steps=150, distill=False),
    dict(blocks=1, lr=1e-4, anchor=10.0, rw=10.0, steps=150, distill=False),
    dict(blocks=1, lr=1e-4, anchor=0.1, rw=3.0, steps=150, distill=True),
    dict(blocks=1, lr=1e-4, anchor=0.1, rw=10.0, steps=150, distill=True),
]
res = []
for c in configs:
    gains, refs, secs = [], [], []
    for tr, te in folds:
        model.set_weights(saved)
        freeze_for_finetuning(model, c["blocks"])
        base_te = ba(hpool[te], ypool[te])
        yt = ypool[tr]
        cw = class_weights(yt, 3)
        t = time.process_time()
        fit_top(
            top,
            hpool[tr],
            yt,
            np.array([cw.get(int(v), 1) for v in yt]),
            rehearsal=(hreh, yreh) if c["rw"] else None,
            replay_weight=c["rw"],
            steps=c["steps"],
            learning_rate=c["lr"],
            anchor=c["anchor"],
            distill=c.get("distill", False),
        )
        secs.append(time.process_time() - t)
        gains.append(ba(hpool[te], ypool[te]) - base_te)
        refs.append(ba(href, yref) - base_ref)
    res.append(
        {
            **c,
            "gain": float(np.mean(gains)),
            "ref": float(np.mean(refs)),
            "gains": gains,
            "refs": refs,
            "cpu_s": float(np.mean(secs)),
        }
    )
    print(res[-1], flush=True)
    args.results.write_text(json.dumps(res, indent=1))
