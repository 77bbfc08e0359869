"""The one failure policy: a named fault is a line and an exit code, a bug keeps its traceback."""

import pytest

from annlab.config import ConfigError
from annlab.errors import Stopped, reported
from annlab.interrupts import Interrupted


def _exit(fn, capsys):
    with pytest.raises(SystemExit) as info:
        fn()
    return info.value.code, capsys.readouterr().err


def _raise(err):
    def fn():
        raise err
    return fn


def test_a_named_fault_is_one_line_on_stderr_and_exit_1(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, err = _exit(reported(_raise(ConfigError("train.epochs", 0, "an integer >= 1"))),
                      capsys)
    assert (code, err) == (1, "error: invalid config: train.epochs=0; allowed: an integer "
                              ">= 1\n")


def test_an_interrupt_exits_130_with_what_was_closed(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert _exit(reported(_raise(Interrupted("terminated (SIGTERM)", "terminated (SIGTERM): "
                                             "run r (1) closed as KILLED"))), capsys) == \
        (130, "terminated (SIGTERM): run r (1) closed as KILLED\n")
    assert _exit(reported(_raise(KeyboardInterrupt())), capsys) == (130,
                                                                     "interrupted (Ctrl-C)\n")
    lines = ["interrupted (Ctrl-C): closed as KILLED:", "  r (1)", "rerun the same command"]
    assert _exit(reported(_raise(Stopped(lines))), capsys) == (130, "\n".join(lines) + "\n")


def test_an_entry_point_may_give_its_own_code_for_faults(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    fn = reported(error_code=2)(_raise(ConfigError("seed", -1, "an integer >= 0")))
    assert _exit(fn, capsys)[0] == 2


def test_bugs_and_hydra_full_error_keep_the_traceback(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ZeroDivisionError):
        reported(lambda: 1 / 0)()
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):
        reported(_raise(ConfigError("seed", -1, "an integer >= 0")))()
