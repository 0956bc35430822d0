"""Write the training CSV for the bundled model from ``../shared/data/cxr/manifest.csv``.

The CSV has the generic columns ``path,label,patient_id,split,source`` that
``main.py train`` reads. Classes are merged into the three the app reports (viral,
bacterial and unspecified pneumonia become ``Pneumonia``). The published benchmark split
``kaggle_covid19_image_dataset/test`` is written with ``split=test`` so it is never
trained or tuned on; the shipped sample images are left out altogether.

    python tools/make_cxr_csv.py ../shared/data/cxr runs/cxr.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inference.paths import sample_stems  # noqa: E402

CLASS_MAP = {
    "COVID-19": "COVID-19",
    "Normal": "Normal",
    "Viral Pneumonia": "Pneumonia",
    "Bacterial Pneumonia": "Pneumonia",
    "Pneumonia (unspecified)": "Pneumonia",
}
BENCHMARK_SOURCE = "kaggle_covid19_image_dataset"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the cxr collection folder (holds manifest.csv)")
    parser.add_argument("out", type=Path, help="CSV to write")
    args = parser.parse_args(argv)
    manifest = args.data / "manifest.csv"
    if not manifest.is_file():
        print(f"error: {manifest} not found", file=sys.stderr)
        return 1
    skip = set(sample_stems())
    rows = []
    with manifest.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = Path(row["path"]).stem
            if any(name.startswith(s + "_") for s in skip):
                continue
            test = row["source"] == BENCHMARK_SOURCE and row["split"] == "test"
            rows.append(
                {
                    "path": str((args.data / row["path"]).resolve()),
                    "label": CLASS_MAP[row["class"]],
                    "patient_id": row["patient_id"],
                    "split": "test" if test else "",
                    "source": row["source"],
                    "view_position": row.get("view_position", ""),
                    "patient_age": row.get("patient_age", ""),
                }
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {args.out} ({len(skip)} sample images left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
