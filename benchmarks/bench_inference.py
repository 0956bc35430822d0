"""Inference speed: model alone, the batched file pipeline, the naive loop, single-image latency.

    .venv/bin/python benchmarks/bench_inference.py [--model DIR | --arch custom-cnn --size 224]
        [--data ../shared/data/cxr] [--n 240] [--batch-size 16] [--json OUT]

On the same ``--n`` images of the shared data set (a seeded sample across all sources, so
224 px uploads and full-size films are mixed), it prints:

* model only: forward passes on already preprocessed batches (images/s), the ceiling
  (best of ``--repeats`` runs, as is the end-to-end figure);
* end to end: ``Predictor.predict_paths`` on the files (decode + preprocess on a thread
  pool overlapping the model), images/s and as a share of the ceiling (target >= 80%);
* naive: for each file ``load_image``, ``preprocess``, ``model.predict`` on one image;
* latency of one image (median after warm-up): ``predict``, ``predict_and_explain``
  (Grad-CAM, target < 150 ms on a 2-core CPU) and Grad-CAM++.

Without a trained model (``--arch``), an untrained network of that architecture is
written to a temporary bundle: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the checkout

from inference.loading import load_image  # noqa: E402
from inference.paths import bundled_model_dir  # noqa: E402
from inference.preprocess import preprocess  # noqa: E402


def _sample_files(data: Path, n: int, seed: int) -> list[Path]:
    manifest = data / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="", encoding="utf-8") as fh:
            paths = [data / row["path"] for row in csv.DictReader(fh)]
    else:
        paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"))
    paths = [p for p in paths if p.is_file()]
    if len(paths) < n:
        raise SystemExit(f"only {len(paths)} images under {data}; need {n}")
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), size=n, replace=False))]


def _untrained_bundle(arch: str, size: int, out: Path) -> Path:
    from inference.bundle import BundleInfo, write_bundle
    from inference.preprocess import PreprocessConfig
    from training.architectures import build_model

    model, layer = build_model(arch, size, 1, 3)
    info = BundleInfo(
        name=f"untrained-{arch}",
        version="0",
        architecture=arch,
        class_names=["COVID-19", "Normal", "Pneumonia"],
        preprocessing=PreprocessConfig(size=size, channels=1),
        gradcam_layer=layer,
    )
    return write_bundle(model, info, out)


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model bundle (default: the bundled model)")
    parser.add_argument("--arch", help="benchmark an untrained network of this architecture instead")
    parser.add_argument("--size", type=int, default=224, help="input size for --arch (default 224)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cxr")
    parser.add_argument("--n", type=int, default=240, help="number of images (default 240)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runs", type=int, default=30, help="repetitions for latency medians")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs; the best counts (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from inference.predictor import Predictor

    tmp = tempfile.TemporaryDirectory(prefix="bench-inference-")
    if args.arch:
        model_dir = _untrained_bundle(args.arch, args.size, Path(tmp.name) / "bundle")
    else:
        model_dir = args.model or bundled_model_dir()
    predictor = Predictor(model_dir)
    info = predictor.info
    files = _sample_files(args.data, args.n, args.seed)
    bs = args.batch_size
    print(f"model {info.display_name} ({info.architecture}, {info.input_size} px) on {predictor.device}")
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; {len(files)} images from {args.data}")
    predictor.warm_up()

    # Preprocess everything once (also warms the page cache for the runs that read files).
    images = [load_image(p) for p in files]
    xs = np.stack([predictor.prepare(im)[0] for im in images])
    pixels = [im.shape[0] * im.shape[1] for im in images]
    largest = images[int(np.argmax(pixels))].shape
    print(f"image sizes: median {np.median(pixels) / 1e6:.2f} MP, largest {largest[1]}x{largest[0]} px")

    # With a lung model every prediction is two networks: the lung model gates it (issue 13:
    # no plausible lungs, no AI result) and, for a lung-crop model, finds the crop; the
    # classifier reads the image. "Model only" is then both forward passes on already
    # preprocessed batches.
    cropping = info.preprocessing.crop == "lungs" and predictor.lungs is not None
    gated = predictor.lungs is not None
    if gated:
        lung_config = predictor.lungs.card.preprocessing
        xl = np.stack([preprocess(im, lung_config)[0] for im in images])
        predictor.lungs.predict_batch(xl[:bs])
        print("with the lung gate: model-only figures include the lung network's forward pass")

    # 1. Model only; 2. end to end through the file pipeline. Best of --repeats runs each,
    # alternating, so that other load on the machine hits both alike.
    predictor.forward(xs[:bs])
    list(predictor.predict_paths(files[:bs], batch_size=bs))
    model_only = end_to_end = 0.0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(0, len(xs), bs):
            if gated:
                predictor.lungs.predict_batch(xl[i : i + bs])
            predictor.forward(xs[i : i + bs])
        model_only = max(model_only, len(xs) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        results = list(predictor.predict_paths(files, batch_size=bs))
        end_to_end = max(end_to_end, len(files) / (time.perf_counter() - t0))
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]

    # 3. Naive: one file at a time with model.predict.
    model = predictor.model
    model.predict(xs[:1], verbose=0)
    t0 = time.perf_counter()
    for path in files:
        image = load_image(path)
        box = predictor.lungs.crop_box(image, info.preprocessing.crop_margin) if cropping else None
        x, _ = preprocess(image, info.preprocessing, box)
        model.predict(x[np.newaxis], verbose=0)
    naive = len(files) / (time.perf_counter() - t0)

    # 4. Latency of one image already in memory (decode excluded), median after warm-up. Each
    # call gets a fresh copy of the pixels: the lung model remembers the images it has seen,
    # and a new image must pay for its segmentation.
    image = images[len(images) // 2]

    def fresh():
        return dataclasses.replace(image, pixels=image.pixels.copy())

    for _ in range(3):
        predictor.predict(fresh())
        predictor.predict_and_explain(fresh())
        predictor.predict_and_explain(fresh(), method="gradcam++")
    lat_predict = _median_ms(lambda: predictor.predict(fresh()), args.runs)
    lat_cam = _median_ms(lambda: predictor.predict_and_explain(fresh()), args.runs)
    lat_campp = _median_ms(lambda: predictor.predict_and_explain(fresh(), method="gradcam++"), args.runs)
    lat_cam_full = _median_ms(lambda: predictor.predict_and_explain(fresh())[1].heatmap_original, args.runs)

    figures = {
        "model": info.display_name,
        "architecture": info.architecture,
        "input_size": info.input_size,
        "device": predictor.device,
        "cpu_cores": os.cpu_count(),
        "n_images": len(files),
        "lung_crop": cropping,
        "lung_gate": gated,
        "ood_gate": predictor.ood is not None,
        "batch_size": bs,
        "model_only_images_per_s": round(model_only, 1),
        "end_to_end_images_per_s": round(end_to_end, 1),
        "end_to_end_share_of_model_only": round(end_to_end / model_only, 3),
        "naive_images_per_s": round(naive, 1),
        "latency_predict_ms": round(lat_predict, 1),
        "latency_predict_gradcam_ms": round(lat_cam, 1),
        "latency_predict_gradcam_plus_plus_ms": round(lat_campp, 1),
        "latency_predict_gradcam_full_res_map_ms": round(lat_cam_full, 1),
        "latency_image_shape": list(image.shape),
    }
    print()
    print(f"{'model only (batched forward)':44s} {model_only:8.1f} images/s")
    print(f"{'end to end (predict_paths)':44s} {end_to_end:8.1f} images/s  ({100 * end_to_end / model_only:.0f}%)")
    print(f"{'naive (load, resize, model.predict, next)':44s} {naive:8.1f} images/s")
    print(f"{'latency: predict':44s} {lat_predict:8.1f} ms")
    print(f"{'latency: predict + Grad-CAM':44s} {lat_cam:8.1f} ms")
    print(f"{'latency: predict + Grad-CAM++':44s} {lat_campp:8.1f} ms")
    print(f"{'latency: + map on the original image':44s} {lat_cam_full:8.1f} ms  ({image.shape[1]}x{image.shape[0]})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
