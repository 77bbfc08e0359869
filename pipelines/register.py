"""`make register RUN_ID=...`: a tracked run's model as a version of the registered model
``<experiment>-<dataset>``, champion if it beats the champion; given a sweep's or a study's
parent, its best run's (which the sweep or study registered when it ended).

    python -m pipelines.register <run id> [--uri URI]
"""

from __future__ import annotations

import argparse

from annlab import tracking
from annlab.errors import reported
from annlab.paths import default_paths


@reported
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make register", description=__doc__.split("\n")[0])
    parser.add_argument("run_id")
    parser.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else the "
                                      "embedded store)")
    args = parser.parse_args(argv)
    uri = tracking.resolve_uri(args.uri, default_paths().store)
    for registered in tracking.register_given(tracking.connect(uri), args.run_id):
        print(registered.line())


if __name__ == "__main__":
    main()
