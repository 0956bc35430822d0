"""Metrics on hand-made cases, reports, and ``main.py evaluate``."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.training_data import make_class_folder  # noqa: E402
from training.evaluate import (  # noqa: E402
    compute_metrics,
    metrics_by_group,
    metrics_markdown,
    roc_auc,
    roc_curve,
    write_report,
)

NAMES = ["COVID-19", "Normal", "Pneumonia"]


def _probs_for(pred: list[int], k: int = 3, conf: float = 0.8) -> np.ndarray:
    p = np.full((len(pred), k), (1 - conf) / (k - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_known_confusion_matrix() -> None:
    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0]
    m = compute_metrics(np.array(y_true), _probs_for(y_pred), NAMES)
    assert m["confusion_matrix"] == {"classes": NAMES, "matrix": [[3, 1, 0], [0, 2, 1], [1, 0, 2]]}
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["n_images"] == 10
    c = m["per_class"]["COVID-19"]
    assert (c["precision"], c["recall"], c["support"]) == (pytest.approx(3 / 4), pytest.approx(3 / 4), 4)
    assert c["f1"] == pytest.approx(0.75)
    assert c["specificity"] == pytest.approx(5 / 6)
    n = m["per_class"]["Normal"]
    assert n["precision"] == pytest.approx(2 / 3) and n["recall"] == pytest.approx(2 / 3)
    f1s = [0.75, 2 / 3, 2 / 3]
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert m["weighted_f1"] == pytest.approx((0.75 * 4 + 2 / 3 * 3 + 2 / 3 * 3) / 10)
    assert m["macro_recall"] == pytest.approx(np.mean([3 / 4, 2 / 3, 2 / 3])) == m["balanced_accuracy"]


def test_perfect_and_reversed_scores_and_absent_class() -> None:
    y = np.array([0, 0, 1, 1, 1])
    perfect = _probs_for([0, 0, 1, 1, 1], conf=0.9)
    m = compute_metrics(y, perfect, NAMES)
    assert m["accuracy"] == 1.0
    assert m["per_class"]["COVID-19"]["auc"] == 1.0 and m["per_class"]["Normal"]["auc"] == 1.0
    # Pneumonia is absent: no recall, no AUC, no F1 -> null, and it does not enter the averages.
    p = m["per_class"]["Pneumonia"]
    assert p["support"] == 0 and p["auc"] is None and p["recall"] is None and p["f1"] is None
    assert m["macro_f1"] == 1.0
    json.dumps(m, allow_nan=False)
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5  # ties count half
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_a_class_never_predicted_has_null_precision_and_zero_f1() -> None:
    m = compute_metrics(np.array([0, 1, 2]), _probs_for([0, 1, 1]), NAMES)
    p = m["per_class"]["Pneumonia"]
    assert p["precision"] is None and p["recall"] == 0.0 and p["f1"] == 0.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_rank_auc_equals_pairwise_definition(pairs) -> None:
    y = np.array([a for a, _ in pairs])
    s = np.array([b for _, b in pairs], dtype=float)
    pos, neg = s[y], s[~y]
    got = roc_auc(y, s)
    if len(pos) == 0 or len(neg) == 0:
        assert got is None
        return
    expected = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert got == pytest.approx(expected)
    fpr, tpr = roc_curve(y, s)
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == pytest.approx(1.0) and tpr[-1] == pytest.approx(1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected)  # the curve's area is the AUC


def test_expected_calibration_error() -> None:
    # Calibrated: confidence 0.8 and 8 of 10 right.
    y = np.array([0] * 8 + [1] * 2)
    probs = _probs_for([0] * 10, conf=0.8)
    assert compute_metrics(y, probs, NAMES)["ece"] == pytest.approx(0.0, abs=1e-9)
    # Overconfident: certain, and right half the time.
    y = np.array([0, 1] * 5)
    probs = np.tile([1.0, 0.0, 0.0], (10, 1))
    assert compute_metrics(y, probs, NAMES)["ece"] == pytest.approx(0.5)


def test_metrics_by_group() -> None:
    y = np.array([0, 1, 0, 1])
    probs = _probs_for([0, 1, 1, 0])
    by = metrics_by_group(y, probs, ["a", "a", "b", "b"], NAMES)
    assert list(by) == ["a", "b"]
    assert by["a"]["accuracy"] == 1.0 and by["b"]["accuracy"] == 0.0 and by["b"]["n_images"] == 2


def test_write_report(tmp_path: Path) -> None:
    y = np.array([0, 1, 2, 2])
    probs = _probs_for([0, 1, 2, 1])
    m = compute_metrics(y, probs, NAMES)
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.6]}
    paths = write_report({"val": m}, tmp_path, history=history, predictions={"val": (y, probs)}, title="T")
    for name in (
        "report.md",
        "report.json",
        "training_curves.png",
        "confusion_matrix_val.png",
        "roc_val.png",
        "reliability_val.png",
    ):
        assert paths[name].stat().st_size > 0
        assert paths[name].parent == tmp_path
    assert paths["roc_val.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    assert "| Pneumonia | 1.000 | 0.500 |" in md and "| COVID-19 | 1 | 0 | 0 |" in md
    assert json.loads((tmp_path / "report.json").read_text())["metrics"]["val"]["accuracy"] == 0.75


# ---------------------------------------------------------------------------------------------
# main.py evaluate


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_bundle import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", size=32)


@pytest.fixture
def no_lung_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """These synthetic squares are no chest films: without a lung model the lung gate stays
    open, so the tests below measure the metrics themselves (tests/test_abstain.py the gate)."""
    import inference.lungs

    def missing():
        raise inference.lungs.LungModelError("no lung model in this test")

    monkeypatch.setattr(inference.lungs, "shared_segmenter", missing)


@pytest.mark.slow
@pytest.mark.usefixtures("no_lung_model")
def test_cli_evaluate_writes_the_documented_json(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    from main import main

    data = tmp_path / "data"
    make_class_folder(data, {"COVID-19": 3, "Normal": 2, "Viral Pneumonia": 2, "Tuberculosis": 2})
    (data / "Normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out" / "metrics.json"
    rc = main(
        [
            "evaluate",
            str(data),
            "--model",
            str(tiny_bundle),
            "--class-map",
            "Viral Pneumonia=Pneumonia",
            "--json",
            str(out),
            "--report-dir",
            str(tmp_path / "report"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(out.read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "n_images", "ece", "excluded"} <= set(result)
    assert result["n_images"] == result["n_total"] == 7 and result["coverage"] == 1.0
    assert result["excluded"] == {"Tuberculosis": 2}
    assert result["confusion_matrix"]["classes"] == NAMES
    assert set(result["per_class"]) == set(NAMES)
    for values in result["per_class"].values():
        assert {"precision", "recall", "f1", "support", "auc"} <= set(values)
    assert [Path(p).name for p, _ in result["skipped"]] == ["broken.png"]
    assert (tmp_path / "report" / "report.md").is_file()
    assert "Tuberculosis: 2" in captured.err


def test_cli_evaluate_errors_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from main import main

    assert main(["evaluate", str(tmp_path / "missing"), "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    # Without --model the bundled model is used; when it is missing the message says so.
    import inference.paths

    monkeypatch.setattr(inference.paths, "bundled_model_dir", lambda: tmp_path / "no-default")
    make_class_folder(tmp_path / "d", {"A": 1})
    assert main(["evaluate", str(tmp_path / "d")]) == 2  # a model that cannot be used: 2, as in predict
    assert "no-default" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_refuses_data_without_any_known_class(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    from main import main

    make_class_folder(tmp_path / "d", {"Cats": 2, "Dogs": 2})
    assert main(["evaluate", str(tmp_path / "d"), "--model", str(tiny_bundle)]) == 1
    assert "--class-map" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("no_lung_model")
def test_evaluate_reports_every_metric_per_source_folder(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    """--group-by-folder: DATA/<hospital>/<class>/...; each hospital gets the full metric set."""
    from main import main

    data = tmp_path / "hospitals"
    make_class_folder(data / "hospital_a", {"COVID-19": 3, "Normal": 2}, seed=1)
    make_class_folder(data / "hospital_b", {"Normal": 2, "Pneumonia": 4}, seed=2)
    out = tmp_path / "metrics.json"
    rc = main(["evaluate", str(data), "--model", str(tiny_bundle), "--group-by-folder", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    by_source = result["by_source"]
    assert set(by_source) == {"hospital_a", "hospital_b"}
    assert by_source["hospital_a"]["n_images"] == 5 and by_source["hospital_b"]["n_images"] == 6
    assert by_source["hospital_a"]["per_class"]["Pneumonia"]["support"] == 0
    assert by_source["hospital_b"]["per_class"]["Pneumonia"]["support"] == 4
    for m in by_source.values():
        assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "ece"} <= set(m)
    # The overall counts are the sum of the sources', and the worst source is the lower one.
    total = np.array(result["confusion_matrix"]["matrix"])
    parts = sum(np.array(m["confusion_matrix"]["matrix"]) for m in by_source.values())
    assert (total == parts).all()
    worst = min(by_source, key=lambda s: by_source[s]["accuracy"])
    assert result["worst_source"] == {"source": worst, "accuracy": by_source[worst]["accuracy"]}
    # Without the flag, the first folder level would be taken for classes: nothing is known.
    assert main(["evaluate", str(data), "--model", str(tiny_bundle)]) != 0


@pytest.mark.usefixtures("no_lung_model")
def test_source_column_of_a_csv_gives_per_source_metrics(tiny_bundle: Path, tmp_path: Path) -> None:
    from tests.training_data import write_csv
    from training.evaluate import evaluate_bundle

    paths = make_class_folder(tmp_path / "imgs", {"COVID-19": 2, "Normal": 2, "Pneumonia": 2})
    rows = [(p, p.parent.name, "", "", "north" if i % 2 else "south") for i, p in enumerate(paths)]
    csv_path = write_csv(tmp_path / "data.csv", ("path", "label", "patient_id", "split", "source"), rows)
    result = evaluate_bundle(tiny_bundle, csv_path)
    assert set(result["by_source"]) == {"north", "south"}
    assert sum(m["n_images"] for m in result["by_source"].values()) == result["n_images"] == 6
    assert "Per source:" in metrics_markdown(result)


def test_accuracy_comes_with_its_count_and_a_wilson_interval() -> None:
    from training.evaluate import accuracy_line, compute_metrics, wilson_interval

    lo, hi = wilson_interval(3, 3)
    assert lo == pytest.approx(0.4385, abs=1e-4) and hi == 1.0
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(0, 0) is None
    probs = np.eye(3)[[0, 1, 2]]
    m = compute_metrics(np.array([0, 1, 2]), probs, ["a", "b", "c"])
    assert m["correct"] == 3 and m["accuracy_ci95"][0] == pytest.approx(0.4385, abs=1e-4)
    line = accuracy_line(m)
    assert line.startswith("accuracy 1.0000 (3/3, 95% CI 0.439-1.000)")
    assert "Only 3 images" in line


def test_no_small_sample_warning_on_enough_images() -> None:
    from training.evaluate import accuracy_line, compute_metrics

    y = np.arange(150) % 3
    m = compute_metrics(y, np.eye(3)[y], ["a", "b", "c"])
    assert accuracy_line(m) == "accuracy 1.0000 (150/150, 95% CI 0.975-1.000)"
