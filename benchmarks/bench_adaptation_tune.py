"""How the adaptation defaults were chosen: 4-fold CV inside the 200-film NIH pool only.

    .venv/bin/python benchmarks/bench_adaptation_tune.py [OUT]  (after bench_adaptation.py base or recipe-base;
                                                               OUT defaults to /work/runs/adapt)

Each fold fine-tunes the base model's classification layer (training.adapt.fit_head) on half
of the pool's patients and scores the other half, and the other sources' reference images;
the 338 NIH evaluation films of bench_adaptation.py are never touched. Figures are the mean
change in balanced accuracy over the folds (results in bench_adaptation.md).
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_adaptation import CACHE, CLASSES, DATA, _cached, _nih_draws, _reference_labels
from inference.bundle import load_bundle
from inference.ood import load_feature_gaussians
from training.adapt import balanced_accuracy, fit_head, replay_features
from training.ood_fit import logits_and_features
from training.pipeline import class_weights

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/runs/adapt")
sets = json.loads((out / "sets.json").read_text())
x_all, index = _cached(CACHE)
draws, rest = _nih_draws(sets["nih"], [50, 100, 200])
pool = draws[200]
fp = out / "tune_feats.npz"
model, info = load_bundle(out / "base")
if fp.exists():
    z = np.load(fp)
    fpool, fref = z["fpool"], z["fref"]
else:
    xp = np.stack([x_all[index[r["path"]]] for r in pool])
    xr = np.stack([x_all[index[p]] for p in sets["reference"]])
    _, fpool = logits_and_features(model, xp, info.preprocessing)
    _, fref = logits_and_features(model, xr, info.preprocessing)
    np.savez(fp, fpool=fpool, fref=fref)
ypool = np.array([CLASSES.index(r["label"]) for r in pool])
rl = _reference_labels(DATA, sets["reference"])
yref = np.array([CLASSES.index(rl[p]) for p in sets["reference"]])
layer = model.get_layer("logits")
w0, b0 = layer.get_weights()
scorer = load_feature_gaussians(out / "base")
pid = [r["patient_id"] or r["path"] for r in pool]


def ba(f, y, w, b):
    return balanced_accuracy(y, np.argmax(f @ w + b, 1), 3)


print("base pool", ba(fpool, ypool, w0, b0), "ref", ba(fref, yref, w0, b0))
rng = np.random.default_rng(5)
patients = sorted(set(pid))
folds = []
for _fold in range(4):
    perm = rng.permutation(len(patients))
    half = set(np.array(patients)[perm[: len(patients) // 2]])
    tr = np.array([p in half for p in pid])
    folds.append((tr, ~tr))
configs = []
for steps in (100, 300, 1000):
    for lr in (1e-3, 1e-2):
        for anchor in (1e-3, 1e-1):
            for rw in (0.0, 1.0, 3.0):
                configs.append(dict(steps=steps, learning_rate=lr, anchor=anchor, rw=rw))
rep = replay_features(scorer, 500, 0)
res = []
for c in configs:
    gains, refs = [], []
    for tr, te in folds:
        yt = ypool[tr]
        cw = class_weights(yt, 3)
        w, b, _ = fit_head(
            fpool[tr],
            yt,
            np.array([cw.get(int(v), 1) for v in yt]),
            w0,
            b0,
            None,
            replay=rep if c["rw"] else None,
            replay_weight=c["rw"],
            steps=c["steps"],
            learning_rate=c["learning_rate"],
            anchor=c["anchor"],
        )
        gains.append(ba(fpool[te], ypool[te], w, b) - ba(fpool[te], ypool[te], w0, b0))
        refs.append(ba(fref, yref, w, b) - ba(fref, yref, w0, b0))
    res.append((c, float(np.mean(gains)), float(np.mean(refs))))
    print(c, f"gain {np.mean(gains):+.3f} ref {np.mean(refs):+.3f}", flush=True)
(out / "tune.json").write_text(json.dumps(res, indent=1))
