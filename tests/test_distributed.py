"""Training past one process: TF_CONFIG, several replicas, and resuming from a backup."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from inference.bundle import load_bundle  # noqa: E402
from tests.training_data import make_class_folder  # noqa: E402
from training.distributed import (  # noqa: E402
    ClusterTask,
    DistributedError,
    check_backup_dir,
    local_tf_configs,
    parse_local,
    read_tf_config,
    stamp_backup_dir,
)
from training.progress import NullProgress  # noqa: E402
from training.train import TrainConfig, TrainingError, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("COVID-19", "Normal", "Pneumonia")


def _cluster(n: int, index: int) -> str:
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{20000 + i}" for i in range(n)]},
            "task": {"type": "worker", "index": index},
        }
    )


def test_tf_config_is_read_and_bad_ones_are_explained() -> None:
    assert read_tf_config({}) is None and read_tf_config({"TF_CONFIG": " "}) is None
    task = read_tf_config({"TF_CONFIG": _cluster(3, 1)})
    assert task == ClusterTask(("127.0.0.1:20000", "127.0.0.1:20001", "127.0.0.1:20002"), 1)
    assert not task.is_chief and read_tf_config({"TF_CONFIG": _cluster(2, 0)}).is_chief
    for bad, words in (
        ("{not json", "TF_CONFIG is not"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is not"),
        (_cluster(2, 2), "task index 2"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "only 'worker'"),
    ):
        with pytest.raises(DistributedError, match=words):
            read_tf_config({"TF_CONFIG": bad})


def test_several_workers_refuse_an_imagenet_start_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ImageNet warm-up predicts with Keras, which the multi-worker strategy would split."""
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"not read")
    monkeypatch.setenv("TF_CONFIG", _cluster(2, 0))
    config = TrainConfig(data=tmp_path / "no-such-data", out_dir=tmp_path / "model", arch="resnet50")
    with pytest.raises(TrainingError, match="ImageNet weights is not supported on several workers"):
        train(dataclasses.replace(config, init=f"imagenet:{weights}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]
    monkeypatch.setenv("TF_CONFIG", _cluster(1, 0))  # a one-worker cluster is just this machine
    with pytest.raises(Exception, match="no-such-data"):
        train(dataclasses.replace(config, init="scratch"))


def test_local_cluster_spec_and_its_tf_configs() -> None:
    assert parse_local("local:2") == 2 and parse_local("local:16") == 16
    for bad in ("local:1", "local:x", "2", "tcp:2", "local:17"):
        with pytest.raises(DistributedError, match="use local:N"):
            parse_local(bad)
    configs = [read_tf_config({"TF_CONFIG": c}) for c in local_tf_configs(3)]
    assert [c.index for c in configs] == [0, 1, 2] and len({c.workers for c in configs}) == 1
    hosts = configs[0].workers
    assert all(h.startswith("127.0.0.1:") for h in hosts) and len(set(hosts)) == 3


def test_cli_refuses_a_bad_distributed_spec(capsys: pytest.CaptureFixture[str]) -> None:
    from main import main

    assert main(["train", "data", "--out", "model", "--distributed", "everywhere"]) == 1
    assert "use local:N" in capsys.readouterr().err


def test_backup_folders_that_are_not_this_runs_backup_are_refused(tmp_path: Path) -> None:
    run = {"epochs": 3, "seed": 0}
    assert check_backup_dir(tmp_path / "new", run) is None and not (tmp_path / "new").exists()
    theirs = tmp_path / "documents"
    theirs.mkdir()
    (theirs / "thesis.txt").write_text("mine")
    with pytest.raises(DistributedError, match="not a training backup"):
        check_backup_dir(theirs, run)
    ours = stamp_backup_dir(tmp_path / "ours", run)
    assert check_backup_dir(ours, run) is None  # stamped, nothing saved yet
    with pytest.raises(DistributedError, match=r"other settings \(epochs\)"):
        check_backup_dir(ours, {"epochs": 5, "seed": 0})
    (tmp_path / "file").write_text("x")
    with pytest.raises(DistributedError, match="is a file"):
        check_backup_dir(tmp_path / "file", run)
    # And train() refuses such a folder before any work, leaving the files alone.
    config = TrainConfig(data=tmp_path / "no-such-data", out_dir=tmp_path / "model", backup_dir=theirs)
    with pytest.raises(TrainingError, match="not a training backup"):
        train(config)
    assert (theirs / "thesis.txt").read_text() == "mine" and not (tmp_path / "model").exists()


def test_cli_passes_backup_dir_and_explains_a_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from main import main

    theirs = tmp_path / "documents"
    theirs.mkdir()
    (theirs / "thesis.txt").write_text("mine")
    rc = main(["train", str(tmp_path), "--out", str(tmp_path / "model"), "--backup-dir", str(theirs)])
    err = capsys.readouterr().err
    assert rc == 1 and "not a training backup" in err and "Traceback" not in err
    assert (theirs / "thesis.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distdata")
    make_class_folder(root, dict.fromkeys(CLASSES, 6), size=40, seed=3)
    return root


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=data, out_dir=out, arch="custom-cnn", image_size=32, batch_size=8, init="scratch", val_fraction=0.2
    )
    return TrainConfig(**{**base, **kw})


class Epochs(NullProgress):
    def __init__(self, crash_after: int | None = None) -> None:
        self.crash_after = crash_after
        self.epochs: list[int] = []
        self.messages: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.epochs.append(epoch)
        if self.crash_after is not None and len(self.epochs) == self.crash_after:
            raise RuntimeError("power cut")

    def on_message(self, text: str) -> None:
        self.messages.append(text)


@pytest.mark.slow
def test_a_crashed_run_resumes_from_its_backup(folder_data: Path, tmp_path: Path) -> None:
    out, backup = tmp_path / "model", tmp_path / "model.backup"
    config = _config(folder_data, out, epochs=3, backup_dir=backup)
    with pytest.raises(RuntimeError, match="power cut"):
        train(config, progress=Epochs(crash_after=2))
    assert not out.exists()
    assert check_backup_dir(backup, _backup_key(config)) == 2  # two finished epochs kept

    progress = Epochs()
    result = train(config, progress=progress)
    # The epoch counter continues from the backup: only the third epoch ran again.
    assert progress.epochs == [2] and len(result.history["loss"]) == 1
    assert any("Resuming from the backup" in m and "2 of 3" in m for m in progress.messages)
    assert result.epochs_run == 3 and result.info.training["resumed_at_epoch"] == 2
    assert not backup.exists()  # removed once the run ended well
    model, info = load_bundle(out)
    assert info.class_names == list(CLASSES) and model.outputs[0].shape[-1] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.slow
def test_a_run_without_backup_dir_leaves_nothing_beside_the_model(folder_data: Path, tmp_path: Path) -> None:
    result = train(_config(folder_data, tmp_path / "model", epochs=1))
    assert result.epochs_run == 1 and "resumed_at_epoch" not in result.info.training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _backup_key(config: TrainConfig) -> dict:
    from training.train import _backup_key as key

    return key(config)


_REPLICAS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import training.train as tt
    from tests.training_data import make_class_folder
    from training.progress import NullProgress

    data, out = sys.argv[1], sys.argv[2]
    make_class_folder(__import__("pathlib").Path(data), {"A": 9, "B": 8}, size=40, seed=1)
    tt.select_strategy = lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    batches = []

    class P(NullProgress):
        def on_batch_end(self, epoch, step, logs):
            batches.append(step)

    # 17 training images, 4 per replica: steps of 8, the 1-image remainder left out.
    r = tt.train(
        tt.TrainConfig(data=data, out_dir=out, arch="custom-cnn", image_size=32, batch_size=4, epochs=2,
                       init="scratch", val_fraction=0.0, use_split=False),
        progress=P(),
    )
    print(json.dumps({"loss": r.history["loss"], "batches": len(batches), "init": r.info.training["init"]}))
    """
)


@pytest.mark.slow
def test_two_replicas_train_on_full_batches_without_nan(tmp_path: Path) -> None:
    """MirroredStrategy over two logical CPUs stands in for two GPUs. A remainder batch of
    one image would leave one replica empty and break its BatchNormalization."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _REPLICAS_SCRIPT, str(tmp_path / "data"), str(tmp_path / "model")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["loss"]) == 2 and all(v == v and v < 100 for v in result["loss"])  # finite
    assert result["batches"] == 2 * 2  # 17 // 8 full steps per epoch
    assert "2 replicas (MirroredStrategy), 8 images per step" in result["init"]


@pytest.mark.slow
def test_two_workers_resume_after_one_dies_and_write_a_one_process_bundle(folder_data: Path, tmp_path: Path) -> None:
    """``--distributed local:2``: worker 1 dies after its first epoch (the test hook), the chief
    stops with an error; the same command again resumes both from the backup and the chief
    writes a bundle of the same format as a one-process run's."""
    out, backup = tmp_path / "model", tmp_path / "model.backup"
    command = [sys.executable, str(ROOT / "main.py"), "train", str(folder_data), "--out", str(out)]
    command += ["--arch", "custom-cnn", "--image-size", "32", "--batch-size", "4", "--epochs", "3"]
    command += ["--init", "scratch", "--val-fraction", "0.2", "--backup-dir", str(backup), "--distributed", "local:2"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "CXR_TEST_WORKER_EXIT_AFTER_EPOCH": "1:1",  # fires only in a run that did not resume
    }
    env.pop("TF_CONFIG", None)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    crashed = run()
    assert crashed.returncode != 0 and "Worker 1 failed (exit code 3)" in crashed.stderr, crashed.stderr[-3000:]
    assert "epoch 1/3" in crashed.stderr and "epoch 2/3" not in crashed.stderr
    assert not out.exists()
    for worker in ("worker-0", "worker-1"):  # each kept its own first epoch
        assert [p.name for p in (backup / worker).glob("ckpt-*.index")] == ["ckpt-1.index"]

    resumed = run()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 of 3 epochs already done" in resumed.stderr
    assert "epoch 1/3" not in resumed.stderr and "epoch 3/3" in resumed.stderr  # the counter continued
    assert not backup.exists()  # removed once the run ended well
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # worker 1 wrote nothing
    model, info = load_bundle(out)
    assert info.training["resumed_at_epoch"] == 1 and info.training["epochs_run"] == 3
    assert "2 replicas (MultiWorkerMirroredStrategy), 8 images per step" in info.training["init"]
    probs = model.predict(np.zeros((2, 32, 32, 1), np.float32), verbose=0)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)

    single = train(_config(folder_data, tmp_path / "single", epochs=1, batch_size=4))
    two, one = (json.loads((d / "model.json").read_text()) for d in (out, single.bundle_dir))
    assert set(two) == set(one) and set(two["training"]) - {"resumed_at_epoch"} == set(one["training"])
    assert two["preprocessing"] == one["preprocessing"] and two["class_names"] == one["class_names"]
    files = [sorted(str(p.relative_to(d)) for p in d.rglob("*")) for d in (out, single.bundle_dir)]
    assert files[0] == files[1]
