"""`make cluster` / `make cluster-worker`: a Ray node for `make sweep LAUNCHER=ray`, safe by
default (token authentication on, usage stats off, fixed ports), in the foreground until Ctrl-C.

    python -m pipelines.cluster head [--node-ip 127.0.0.1]
    python -m pipelines.cluster worker --address <head>:6379 --node-ip <this machine>
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from annlab import cluster
from annlab.errors import reported


@reported
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=("head", "worker"))
    parser.add_argument("--node-ip", default="127.0.0.1",
                        help="the address other nodes reach this one at (loopback: one machine)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="a worker's head, <host>:6379 (default: $RAY_ADDRESS)")
    parser.add_argument("--temp-dir", type=Path, help="Ray's temp dir for this node")
    args = parser.parse_args(argv)
    cluster.ray_node(args.role, args.node_ip, args.address, args.temp_dir)


if __name__ == "__main__":
    main()
