"""Same config, same bits: across processes, reruns, BLAS threads; `make figures`, `make
reproduce` and the README's figures."""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image, ImageSequence

from annlab import names, tracking
from annlab.paths import default_paths
from annlab.pipeline import run_experiment
from annlab.provenance import LOCK_FILE, file_hash, platform_info
from annlab.reproducibility import compare_file
from annlab.tracking.liveness import ProcessId
from pipelines.docs import render

REPO = Path(__file__).resolve().parents[2]



def _digest(tmp_path, threads, *overrides):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "tests" / "scripts" / "digest.py"),
                          str(REPO / "conf"),
                          str(tmp_path / f"t{threads}"), *overrides],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_same_bits_in_fresh_processes_with_one_or_two_blas_threads(tmp_path, fast_overrides):
    overrides = [*fast_overrides, "model.hidden_nodes=[12,7]", "train.batch_size=32"]
    one, two = _digest(tmp_path, 1, *overrides), _digest(tmp_path, 2, *overrides)
    again = _digest(tmp_path / "again", 2, *overrides)
    assert one == two == again


def _png_chunks(path):
    data = path.read_bytes()[8:]
    chunks = []
    while data:
        length, kind = struct.unpack(">I4s", data[:8])
        chunks.append(kind.decode())
        data = data[12 + length:]
    return chunks


def test_figures_carry_no_time_or_software_metadata(fast_spec, tmp_path):
    result = run_experiment(fast_spec(), [], tmp_path)
    for key in ("misclassification", "boundary_final"):
        assert set(_png_chunks(result.figures[key])) <= {"IHDR", "PLTE", "IDAT", "IEND",
                                                          "pHYs", "tRNS"}
    # Pillow reads every extension block: a comment would be a frame's "comment", any
    # application extension but the loop count (NETSCAPE2.0) its "extension". (Searching the
    # bytes for a comment's introducer matches palette and image data by chance.)
    with Image.open(result.figures["boundary"]) as gif:
        for frame in ImageSequence.Iterator(gif):
            assert "comment" not in frame.info
            assert frame.info.get("extension", (b"NETSCAPE2.0",))[0] == b"NETSCAPE2.0"


def _reproduce(uri, run_id, **env):
    return subprocess.run([sys.executable, "-m", "pipelines.reproduce", run_id, "--uri", uri],
                          cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


def test_a_fresh_run_reproduces_identically_and_the_verdict_is_tracked(fast_spec, store_uri,
                                                                        tmp_path):
    result = run_experiment(fast_spec(), [], tmp_path)
    out = _reproduce(store_uri, result.run_id, OPENBLAS_NUM_THREADS="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\nidentical: " in out.stdout
    client = MlflowClient(store_uri)
    (verdict,) = client.search_runs(
        [result.experiment_id], f"tags.`annlab.reproduces` = '{result.run_id}'")
    assert verdict.data.tags["annlab.verdict"] == "identical"
    assert client.get_run(result.run_id).info.status == "FINISHED"  # original untouched


def test_altered_metrics_are_reported_with_the_first_differing_epoch(fast_spec, store_uri,
                                                                      tmp_path):
    result = run_experiment(fast_spec(), [], tmp_path)
    client = MlflowClient(store_uri)
    client.log_metric(result.run_id, "val_loss", 123.0, step=7)
    client.log_metric(result.run_id, "test_accuracy", 0.5)
    out = _reproduce(store_uri, result.run_id)
    assert out.returncode == 1
    assert "val_loss: first differs at epoch 7: recorded 123.0" in out.stdout
    assert "test_accuracy: recorded 0.5" in out.stdout
    assert "different:" in out.stdout


def test_an_altered_config_is_reported(fast_spec, store_uri, tmp_path):
    result = run_experiment(fast_spec(), [], tmp_path)
    client = MlflowClient(store_uri)
    cfg = OmegaConf.load(client.download_artifacts(result.run_id, "config/config.yaml",
                                                   str(tmp_path)))
    cfg.train.learning_rate = 0.25
    client.log_text(result.run_id, OmegaConf.to_yaml(cfg), "config/config.yaml")
    out = _reproduce(store_uri, result.run_id)
    assert out.returncode == 1
    assert "config hash: recorded" in out.stdout and "train_loss: first differs" in out.stdout


def test_sweep_children_reproduce(fast_spec, store_uri, tmp_path):
    experiment = tracking.open(store_uri, fast_spec().tracking.experiment)
    parent, _ = experiment.parent_run({"annlab.sweep": "t"}, "p", "tests")
    child = run_experiment(fast_spec(f"tracking.parent_run_id={parent.run_id}",
                                     "tracking.sweep=t"), [], tmp_path)
    out = _reproduce(store_uri, child.run_id)
    assert out.returncode == 0 and "identical" in out.stdout, out.stdout + out.stderr


def test_unknown_run_is_a_clear_error(store_uri):
    tracking.open(store_uri, "annlab")
    out = _reproduce(store_uri, "0123456789abcdef")
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: no run with id '0123456789abcdef' in {store_uri}"


def test_make_figures_twice_gives_the_same_bytes(store_uri, tmp_path):
    digests = []
    for i in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.figures", "experiment=figure2",
             f"hydra.run.dir={tmp_path / str(i)}"], cwd=REPO, capture_output=True, text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": store_uri}, timeout=300)
        assert out.returncode == 0, out.stderr
        files = sorted((Path(default_paths().figures) / "figure2").iterdir())
        assert [f.name for f in files] == ["figure2.gif", "figure2_final.png", "figure3.png"]
        digests.append([hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
    assert digests[0] == digests[1]


def test_readme_figures_are_what_the_code_makes(resolved, tmp_path):
    docs = Path(default_paths().docs)
    record = json.loads((docs / "figures.json").read_text())
    built = render(resolved(["experiment=figure2"]), tmp_path)
    same_platform = (record["platform"] == platform_info()["fingerprint"]
                     and record["lock_hash"] == file_hash(LOCK_FILE))
    for name, path in built.items():
        diff = compare_file(name, docs / name, path, tolerant=not same_platform)
        assert diff is None, f"{diff}: run `make docs` and commit docs/"
        if same_platform:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == record["files"][name]


def test_a_diverged_run_reproduces_up_to_the_same_epoch(fast_spec, store_uri, tmp_path):
    from annlab.network import DivergenceError

    spec = fast_spec("model.activation=relu", "train.learning_rate=5000")
    with pytest.raises(DivergenceError) as info:
        run_experiment(spec, [], tmp_path)
    (run,) = MlflowClient(store_uri).search_runs(
        [tracking.open(store_uri, spec.tracking.experiment).id])
    out = _reproduce(store_uri, run.info.run_id)
    assert out.returncode == 0, out.stdout + out.stderr
    epoch = info.value.epoch
    assert epoch > 2  # some finite epochs to compare
    assert (f"identical: 4 curves x {epoch - 1} epochs, divergence at epoch {epoch}, "
            "data hash, 3 dataset digests, config hash") in out.stdout


def test_what_cannot_be_reproduced_is_refused_in_one_line(fast_spec, store_uri, tmp_path):
    result = run_experiment(fast_spec(), [], tmp_path)
    client = MlflowClient(store_uri)
    client.update_run(result.run_id, status="RUNNING")  # its writer (this process) lives
    out = _reproduce(store_uri, result.run_id)
    assert out.returncode == 2 and "is still RUNNING" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    me = ProcessId.current()  # now as if its writer had been SIGKILLed: closed, then compared
    client.set_tag(result.run_id, names.PROCESS, str(ProcessId(me.host, me.boot, 2**22 + 1, "0")))
    out = _reproduce(store_uri, result.run_id)
    assert out.stderr.startswith(f"note: closed run {result.run_name} ({result.run_id}), left "
                                 "RUNNING by a process that is gone, as KILLED"), out.stderr
    assert out.returncode == 0 and "identical" in out.stdout, out.stdout + out.stderr
    assert client.get_run(result.run_id).info.status == "KILLED"

    foreign = client.create_run(result.experiment_id).info.run_id
    out = _reproduce(store_uri, foreign)
    assert out.returncode == 2 and "was not made by annlab" in out.stderr

    artifacts = Path(client.get_run(result.run_id).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(artifacts / "config")
    out = _reproduce(store_uri, result.run_id)
    assert out.returncode == 2
    assert "made by annlab but its config/config.yaml" in out.stderr and "missing" in out.stderr
