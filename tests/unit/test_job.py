"""One job of a sweep or a study in its process: tracked, its result handed back; a failure
recorded and handed back too, so that the sweep goes on."""

import pytest

from annlab import job
from annlab.names import Status


def test_a_job_hands_back_its_scores_curve_and_final_boundary(fast_spec, tmp_path):
    result = job.run(fast_spec(), [], tmp_path)
    assert result["status"] == Status.FINISHED and len(result["run_id"]) == 32
    assert result["value"] == result["val_curve"][-1] == pytest.approx(1 - result["val_accuracy"])
    assert len(result["val_curve"]) == 60 and result["pruned_at"] is None
    assert result["boundary_final"].startswith(b"\x89PNG")


def test_a_failing_job_is_recorded_and_handed_back_without_raising(fast_spec, tmp_path):
    result = job.run(fast_spec("train.learning_rate=1e300"), [], tmp_path)
    assert result["status"] == Status.FAILED and "diverged at epoch 1" in result["error"]
