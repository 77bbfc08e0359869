"""Comparing a rerun with what a run recorded: curves to their first differing epoch, files by
bytes (pixels on another platform), a report that says what was checked; a sweep's parent
reproduced child by child."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from annlab import reproducibility as rep


def test_a_curve_names_its_first_differing_epoch():
    recorded = pd.Series([0.5, 0.4, 0.3], index=[1, 2, 3])
    assert rep.compare_curve("val_loss", recorded, recorded.copy(), tolerant=False) is None
    changed = recorded.copy()
    changed[2] = 0.41
    assert rep.compare_curve("val_loss", recorded, changed, tolerant=False) == (
        "val_loss: first differs at epoch 2: recorded 0.4, reproduced 0.41")
    assert rep.compare_curve("val_loss", recorded, changed + 1e-9, tolerant=True) is not None
    assert rep.compare_curve("val_loss", recorded, recorded + 1e-9, tolerant=True) is None
    assert "recorded 3 epochs, reproduced 2" in rep.compare_curve(
        "val_loss", recorded, recorded.iloc[:2], tolerant=False)


def test_figures_compare_by_bytes_or_on_another_platform_by_pixels(tmp_path):
    pixels = np.zeros((20, 20, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png", compress_level=1)
    Image.fromarray(pixels).save(tmp_path / "b.png", compress_level=9)  # other bytes
    assert rep.compare_file("f.png", tmp_path / "a.png", tmp_path / "a.png", False) is None
    assert "bytes differ" in rep.compare_file("f.png", tmp_path / "a.png", tmp_path / "b.png",
                                              False)
    assert rep.compare_file("f.png", tmp_path / "a.png", tmp_path / "b.png", True) is None
    pixels[:5] = 255
    Image.fromarray(pixels).save(tmp_path / "c.png")
    assert "25.00% of pixels differ" in rep.compare_file("f.png", tmp_path / "a.png",
                                                         tmp_path / "c.png", True)


@pytest.mark.parametrize("differences, tolerant, verdict", [
    ([], False, "identical"), ([], True, "within tolerance"), (["x: differs"], False,
                                                               "different")])
def test_the_report_gives_its_verdict_and_what_it_checked(differences, tolerant, verdict):
    report = rep.Report("r1", "tanh-h2", "1", tolerant, list(differences), ["a warning"],
                        ["4 curves x 60 epochs", "weights"])
    text = report.text()
    assert report.verdict == verdict and text.startswith("reproducing run tanh-h2 (r1)")
    assert "warning: a warning" in text
    last = text.splitlines()[-1]
    assert last == (f"{verdict}: 4 curves x 60 epochs, weights" if not differences
                    else "different: 1 difference(s) above")


def test_a_sweeps_parent_is_reproduced_child_by_child(fast_spec, store_uri, tmp_path, capsys):
    from annlab import names, tracking
    from annlab.pipeline import run_experiment
    from pipelines.reproduce import main

    spec = fast_spec()
    experiment = tracking.open(store_uri, spec.tracking.experiment)
    parent, _ = experiment.parent_run({names.SWEEP: "t"}, "sweep-t", "tests")
    for seed in (0, 1):
        run_experiment(fast_spec(f"tracking.parent_run_id={parent.run_id}", "tracking.sweep=t",
                                 f"seed={seed}"), [], tmp_path / str(seed))
    parent.end("FINISHED")
    assert main([parent.run_id, "--uri", store_uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"reproducing the sweep sweep-t ({parent.run_id}): its 2 finished")
    assert [line.split()[-1] for line in out[1:3]] == ["identical", "identical"]
    assert out[-1] == "2 of 2 identical"
