"""What a job's process loads before its first job: the pipeline and everything it imports.

The joblib workers' fork server (see ``pipelines.serve_forks``) imports this module once and
forks every worker from itself. It shares the launching process's process group, so a Ctrl-C
while it starts and imports (its first ~3 s) reaches both, and the launching process reports it
and stops. The server then leaves at once, without a traceback of the import it was in. Once
imported, multiprocessing's fork server ignores Ctrl-C itself, and its forks (the workers) get
the default handler back: a job is still interrupted by Ctrl-C.
"""

import os
import signal


def _leave(signum, frame):
    os._exit(128 + signum)


_previous = signal.signal(signal.SIGINT, _leave)
# The launching process starts the server with Ctrl-C blocked (pipelines.serve_forks): one that
# came while Python started is delivered here.
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
try:
    import annlab.pipeline  # noqa: F401
finally:
    signal.signal(signal.SIGINT, _previous)
