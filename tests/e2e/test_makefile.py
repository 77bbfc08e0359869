"""What is given to make reaches annlab as typed: the shell expands nothing in ARGS, RUN_ID or
MODEL (no command substitution, brace expansion, globs or word splitting inside a value)."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _make(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("target", ["register", "reproduce", "serve"])
@pytest.mark.parametrize("value", ["`touch {marker}`", "$$(touch {marker})", "x; touch {marker}",
                                   "it's {marker}", 'a"b {marker}'])
def test_a_run_id_or_model_is_one_word_the_shell_does_not_run(tmp_path, target, value):
    marker = tmp_path / "ran"
    value = value.format(marker=marker)
    key = "MODEL" if target == "serve" else "RUN_ID"
    done = _make(tmp_path, target, f"{key}={value}")
    assert not marker.exists()
    assert done.returncode != 0
    shown = value.replace("$$", "$")  # make's own escape for a dollar
    assert repr(shown) in done.stderr or shown in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# Hydra's own quotes keep its grammar out of the way; bash would still expand these
@pytest.mark.parametrize("args, seen", [
    ("train.epochs='{1,2}'", "{1,2}"),  # bash: train.epochs=1 train.epochs=2
    ("data=file data.path='README.m[d]' data.target=y", "README.m[d]"),  # bash: README.md
    ("data=file data.path='$$(touch MARKER)' data.target=y", "$(touch"),
])
def test_args_reach_hydra_as_typed(tmp_path, args, seen):
    marker = tmp_path / "ran"
    done = _make(tmp_path, "run", f"ARGS={args.replace('MARKER', str(marker))}")
    assert done.returncode != 0 and not marker.exists()
    assert seen in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
