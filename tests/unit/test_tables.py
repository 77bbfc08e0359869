"""The user's own data in files: generated data written out and read back gives the same bits,
labels are whatever the target column holds, and every file annlab cannot use is refused in one
line naming the file and the column or value, before any run exists."""

import numpy as np
import pandas as pd
import pytest

from annlab import tables
from annlab.config import ConfigError
from annlab.data import write_files
from annlab.pipeline import rebuild

QUICK = ["train.epochs=40", "plot.frames=3", "plot.grid_size=10", "plot.dpi=20"]


def _files(paths: dict) -> list[str]:
    return [f"data.{split}={path}" for split, path in paths.items()]


@pytest.mark.parametrize("name", ["moons", "iris"])
def test_a_generated_dataset_written_as_files_trains_to_the_same_bits(resolved, tmp_path, name):
    generated = resolved([f"data={name}", *QUICK])
    written = write_files(generated.data, generated.seed, tmp_path / "files")
    assert sorted(p.name for p in written.values()) == ["test.csv", "train.csv",
                                                        "validation.csv"]
    from_files = resolved(["data=file", *QUICK, *_files(written), "data.target=target"])
    a, b = rebuild(generated, tmp_path / "a"), rebuild(from_files, tmp_path / "b")
    np.testing.assert_array_equal(a.history.to_numpy(), b.history.to_numpy())
    for x, y in zip(a.model.coefs_ + a.model.intercepts_, b.model.coefs_ + b.model.intercepts_):
        np.testing.assert_array_equal(x, y)
    assert a.splits.digest() == b.splits.digest()
    assert list(b.model.classes_) == list(a.model.classes_)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError], ids=["Ctrl-C", "disk full"])
def test_splits_written_again_appear_whole_or_not_at_all(resolved, tmp_path, monkeypatch, stop):
    spec = resolved(["data=moons", *QUICK])
    out = tmp_path / "files"
    before = {p: p.read_bytes() for p in write_files(spec.data, spec.seed, out).values()}
    real = pd.DataFrame.to_csv

    calls = []

    def halfway(frame, path, **kw):  # the second file's write stops after half its rows
        calls.append(path)
        if len(calls) == 2:
            real(frame.iloc[: len(frame) // 2], path, **kw)
            raise stop()
        return real(frame, path, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_csv", halfway)
    again = resolved(["data=moons", *QUICK, "data.n_samples=300"])
    with pytest.raises(stop):
        write_files(again.data, again.seed, out)
    after = {p: p.read_bytes() for p in before}
    first, *rest = before  # train.csv was replaced whole; the others are as they were
    assert after[first] != before[first] and all(after[p] == before[p] for p in rest)
    assert sorted(p.name for p in out.iterdir()) == ["test.csv", "train.csv", "validation.csv"]


def test_one_table_is_split_by_annlab_and_named_after_its_file(resolved, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, 3)), columns=["height", "width", "noise"])
    frame["kind"] = np.where(frame["height"] + frame["width"] > 0, "tall", "short")
    frame.to_csv(tmp_path / "shapes.csv", index=False)
    spec = resolved(["data=file", f"data.path={tmp_path / 'shapes.csv'}", "data.target=kind",
                     "data.features=[height,width]", *QUICK])
    assert (spec.data.label, spec.name) == ("shapes", "shapes-tanh-h10-lr0.5")
    assert spec.data.columns == ["height", "width"] and spec.data.split_sizes() == (180, 60, 60)
    outcome = rebuild(spec, tmp_path / "run")
    assert list(outcome.model.classes_) == ["short", "tall"]
    assert outcome.scores["test_accuracy"] > 0.9


def test_the_hash_follows_the_files_content_not_their_path(resolved, tmp_path):
    frame = pd.DataFrame({"x": np.arange(40.0), "y": np.arange(40) % 2})
    for name in ("a.csv", "b.csv"):
        frame.to_csv(tmp_path / name, index=False)
    a, b = (resolved(["data=file", f"data.path={tmp_path / n}", "data.target=y"])
            for n in ("a.csv", "b.csv"))
    assert a.hash == b.hash and a.params["data.path"] != b.params["data.path"]
    frame.assign(x=frame["x"] + 1).to_csv(tmp_path / "b.csv", index=False)
    changed = resolved(["data=file", f"data.path={tmp_path / 'b.csv'}", "data.target=y"])
    assert changed.hash != a.hash


def test_a_relative_path_resolves_against_the_directory_run_from(resolved, tmp_path,
                                                                  monkeypatch):
    pd.DataFrame({"x": np.arange(40.0), "y": np.arange(40) % 2}).to_csv(tmp_path / "t.csv",
                                                                       index=False)
    monkeypatch.chdir(tmp_path)
    spec = resolved(["data=file", "data.path=t.csv", "data.target=y"])
    assert spec.data.files[0].path == tmp_path / "t.csv"


def test_parquet_reads_like_csv(resolved, tmp_path):
    frame = pd.DataFrame({"x": np.arange(40.0), "y": np.arange(40) % 2})
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    a, b = (resolved(["data=file", f"data.path={tmp_path / n}", "data.target=y"])
            for n in ("t.parquet", "t.csv"))
    assert a.data.shape == b.data.shape


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(60))


@pytest.mark.parametrize("content, overrides, key, says", [
    (None, [], "data.path", "no such file"),
    ("", [], "data.path", "the file is empty"),
    ("x,y,label\n", [], "data.path", "holds no rows"),
    ("x,y,label\n" + GOOD, ["data.target=kind"], "data.path",
     "no column data.target='kind'; its columns: x, y, label"),
    ("x,y,label\n" + GOOD, ["data.features=[x,z]"], "data.path", "no column 'z'"),
    ("x,y,label\n" + GOOD, ["data.target=x", "data.features=[x,y]"], "data.path",
     "the target column 'x' cannot also be a feature"),
    ("x,c,label\n" + "".join(f"{i},{'pq'[i % 2]},{'ab'[i % 2]}\n" for i in range(60)), [],
     "data.path", "feature columns that are not numbers: 'c'"),
    ("x,y,label\n1,,a\n" + GOOD, [], "data.path", "missing values ('y': 1)"),
    ("x,y,label\n" + "".join(f"{i},1,a\n" for i in range(60)), [], "data.path",
     "holds 1 distinct values; allowed: 2 to 6 classes"),
    ("x,y,label\n" + "".join(f"{i},1,{i % 9}\n" for i in range(90)), [], "data.path",
     "holds 9 distinct values"),
    ("x,y,label\n" + GOOD + "7,7,c\n7,8,c\n", [], "data.path",
     "class 'c' has 2 rows; a stratified split with these fractions needs at least 5"),
])
def test_a_table_annlab_cannot_use_is_refused_in_one_line(resolved, tmp_path, content,
                                                           overrides, key, says):
    path = tmp_path / "t.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        resolved(["data=file", f"data.path={path}", "data.target=label", *overrides])
    assert info.value.key == key and says in str(info.value), str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_three_files_must_share_their_columns_and_the_training_labels(resolved, tmp_path):
    header = "x,y,label\n"
    train = _write(tmp_path, "train.csv", header + GOOD)
    val = _write(tmp_path, "validation.csv", "x,z,label\n" + GOOD)
    test = _write(tmp_path, "test.csv", header + GOOD.replace(",b\n", ",c\n"))
    base = ["data=file", f"data.train={train}", f"data.test={test}", "data.target=label"]
    with pytest.raises(ConfigError, match="its columns differ from data.train's") as info:
        resolved([*base, f"data.validation={val}"])
    assert info.value.key == "data.validation"
    val.write_text(header + GOOD)
    with pytest.raises(ConfigError, match="labels the training file does not hold: 'c'") as info:
        resolved([*base, f"data.validation={val}"])
    assert info.value.key == "data.test"


@pytest.mark.parametrize("overrides", [
    ["data.train=a.csv"],  # part of the three
    ["data.path=a.csv", "data.train=a.csv", "data.validation=a.csv", "data.test=a.csv"],
    [],  # none
])
def test_one_table_or_three_files_not_both_nor_part(resolved, overrides):
    with pytest.raises(ConfigError, match="one table to split") as info:
        resolved(["data=file", "data.target=label", *overrides])
    assert info.value.key == "data.path"


def test_a_file_over_the_memory_bound_is_refused_before_it_is_read(resolved, tmp_path,
                                                                    monkeypatch):
    path = _write(tmp_path, "t.csv", "x,y,label\n" + GOOD)
    monkeypatch.setattr("annlab.spec.memory_budget", lambda: 1000)
    with pytest.raises(ConfigError, match="over the memory bound"):
        resolved(["data=file", f"data.path={path}", "data.target=label"])


def test_a_recorded_digest_that_the_file_no_longer_has_is_refused(resolved, tmp_path):
    from annlab.spec import replaced, resolve_plain

    path = _write(tmp_path, "t.csv", "x,y,label\n" + GOOD)
    config = resolved(["data=file", f"data.path={path}", "data.target=label"]).config
    assert resolve_plain(replaced(config, {})).hash  # its own digest: the same content
    with pytest.raises(ConfigError, match="its content is not what data.sha256 records"):
        resolve_plain(replaced(config, {"data.sha256": {"path": "0123456789abcdef"}}))


def test_labels_keep_the_target_columns_values():
    assert tables.labels(pd.Series([1.0, 0.0, 2.0])).dtype == np.int64  # whole numbers
    assert tables.labels(pd.Series(["b", "a"])).tolist() == ["b", "a"]
    assert tables.labels(pd.Series([3, 1])).tolist() == [3, 1]
