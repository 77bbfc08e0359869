"""`make reproduce RUN_ID=...`: rerun a tracked run from its recorded config and compare.

    python -m pipelines.reproduce <run id> [--uri URI] [data.path=<where the file is now>]

Prints `identical` (exit 0) or each difference (exit 1); a run that cannot be reproduced is one
line (exit 2). The verdict is tracked as a run tagged `annlab.reproduces=<run id>`. A sweep's or
a study's parent: each of its finished runs, a line each, then how many are identical (exit 0
only if all are).
"""

from __future__ import annotations

import argparse
import os
import sys

from annlab.errors import AnnlabError, reported
from annlab.paths import default_paths
from annlab.reproducibility import parent_and_children, record_verdict, reproduce
from annlab.spec import FILE_KEYS
from annlab.tracking import resolve_uri


@reported(error_code=2)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("run_id")
    parser.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else the "
                                      "embedded store)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the traceback of an error (as HYDRA_FULL_ERROR=1 does)")
    parser.add_argument("moved", nargs="*", metavar="data.KEY=PATH",
                        help="a data file's new place (data.path, data.train, data.validation, "
                             "data.test): its content is compared with what the run recorded")
    args = parser.parse_intermixed_args(argv)
    moved = dict(m.split("=", 1) for m in args.moved if "=" in m)
    if bad := [m for m in args.moved if m.split("=", 1)[0] not in FILE_KEYS or "=" not in m]:
        parser.error(f"{bad[0]}: allowed: data.path=, data.train=, data.validation=, "
                     "data.test= followed by a file's path")
    if args.verbose:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    uri = resolve_uri(args.uri, default_paths().store)
    if (found := parent_and_children(uri, args.run_id)) is not None:
        return reproduce_children(uri, *found)
    report = reproduce(uri, args.run_id, moved)
    verdict_run = record_verdict(uri, report)
    print(report.text())
    print(f"verdict tracked as run {verdict_run} (tag annlab.reproduces={args.run_id})")
    return 1 if report.differences else 0


def reproduce_children(uri: str, parent, children) -> int:
    """Each finished child of a sweep or study, one line each, then the count."""
    print(f"reproducing the {parent.kind} {parent.run_name} ({parent.run_id}): its "
          f"{len(children)} finished runs, each from its recorded config", flush=True)
    width, same = max((len(c.run_name) for c in children), default=0), 0
    for k, child in enumerate(children, 1):
        try:
            report = reproduce(uri, child.run_id)
            record_verdict(uri, report)
            same += not report.differences
            said = report.verdict + ("" if not report.differences else
                                     f": {len(report.differences)} difference(s), the first "
                                     f"{report.differences[0]}")
        except AnnlabError as err:
            said = f"not reproduced: {err}"
        print(f"[{k:>{len(str(len(children)))}}/{len(children)}] {child.run_name:<{width}}  "
              f"{said}", flush=True)
    print(f"{same} of {len(children)} identical" + ("" if same == len(children) else
          "; make reproduce RUN_ID=<run> for a run's differences in full"))
    return 0 if same == len(children) else 1


if __name__ == "__main__":
    sys.exit(main())
