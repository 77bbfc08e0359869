"""`make reproduce RUN_ID=...`: rerun a tracked run from its recorded config and compare.

    python -m pipelines.reproduce <run id> [--uri URI]

Prints `identical` (exit 0) or each difference (exit 1); a run that cannot be reproduced is one
line (exit 2). The verdict is tracked as a run tagged `annlab.reproduces=<run id>`.
"""

from __future__ import annotations

import argparse
import os
import sys

from annlab.errors import reported
from annlab.paths import default_paths
from annlab.reproducibility import record_verdict, reproduce
from annlab.tracking import resolve_uri


@reported(error_code=2)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("run_id")
    parser.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else the "
                                      "embedded store)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the traceback of an error (as HYDRA_FULL_ERROR=1 does)")
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    uri = resolve_uri(args.uri, default_paths().store)
    report = reproduce(uri, args.run_id)
    verdict_run = record_verdict(uri, report)
    print(report.text())
    print(f"verdict tracked as run {verdict_run} (tag annlab.reproduces={args.run_id})")
    return 1 if report.differences else 0


if __name__ == "__main__":
    sys.exit(main())
