"""`make docs`: rebuild the README's figures (docs/) from conf/experiment/figure2.yaml.

    python -m pipelines.docs experiment=figure2

Writes docs/figure2.gif, docs/figure3.png and docs/figures.json (their hashes and the platform
and lock file they were made with). tests/e2e/test_reproducibility.py rebuilds them and fails if
the committed copies differ from what the code makes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from annlab import provenance
from annlab.errors import reported
from annlab.spec import RunSpec, resolve
from pipelines.figures import POST_NAMES

FILES = {k: v for k, v in POST_NAMES.items() if k != "boundary_final"}  # the post's two figures


def render(spec: RunSpec, out_dir: Path) -> dict[str, Path]:
    """The figures of ``spec`` (no tracking), named as in the post, in ``out_dir``."""
    from annlab.pipeline import rebuild

    outcome = rebuild(spec, out_dir)
    if outcome.failure is not None:
        raise outcome.failure
    return {name: shutil.copyfile(outcome.figures[key], out_dir / name)
            for key, name in FILES.items()}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@reported
def main(cfg: DictConfig) -> None:
    spec = resolve(cfg)
    docs = Path(spec.paths["docs"])
    with tempfile.TemporaryDirectory() as tmp:
        built = render(spec, Path(tmp))
        record = {
            "config_hash": spec.hash,
            "lock_hash": provenance.file_hash(provenance.LOCK_FILE),
            "platform": provenance.platform_info()["fingerprint"],
            "files": {name: hashlib.sha256(path.read_bytes()).hexdigest()
                      for name, path in built.items()},
        }
        docs.mkdir(exist_ok=True)
        for name, path in built.items():
            shutil.copyfile(path, docs / name)
    (docs / "figures.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"{docs}/ figures rebuilt: {', '.join(FILES.values())}")


if __name__ == "__main__":
    main()
