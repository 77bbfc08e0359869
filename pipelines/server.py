"""`make server`: an MLflow tracking server others log to, in the foreground until Ctrl-C.

    python -m pipelines.server [--db URL] [--host H] [--port P] [--artifacts DIR] [--auth]

The backend store is any SQLAlchemy URL (default: the embedded `sqlite:///<repo>/outputs/
mlflow.db`); artifacts are proxied by the server. Prints one line when it answers; Ctrl-C or
SIGTERM stops its whole process group. Clients of an `--auth` server set
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (see annlab.services).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from annlab import services
from annlab.errors import reported
from annlab.paths import default_paths, make_dir


@reported
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make server", description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=default_paths().store,
                        help="backend store, a SQLAlchemy URL (default: the embedded store)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--artifacts", default=default_paths().artifacts,
                        help="directory the server stores proxied artifacts in")
    parser.add_argument("--auth", action="store_true", help="MLflow's basic-auth app")
    parser.add_argument("--state-dir", default=str(services.OUTPUTS / "server"),
                        help="the server's log, auth config and user store")
    args = parser.parse_args(argv)
    make_dir("ARTIFACTS", args.artifacts)
    make_dir("state directory", args.state_dir)
    if args.db.startswith("sqlite:///"):  # the one backend store that is a file here
        make_dir("DB (its directory)", Path(args.db.removeprefix("sqlite:///").split("?")[0]).parent)
    services.serve(args.db, args.host, args.port, Path(args.artifacts), args.auth,
                   Path(args.state_dir))


if __name__ == "__main__":
    main()
