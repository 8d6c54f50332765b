"""The worker fork server: a warmed-up process that forks media workers in milliseconds.

Run by the worker pool as `python -m pbx.forkserver --control-fd N`. It imports
the worker's code (pjsua2, pydantic, structlog) once, freezes those objects out of the garbage
collector and then waits. For each spawn request it forks: the child is a worker at once, with
nothing to import, sharing the parent's pages until it writes them. Nothing of PJSUA2 runs
here: each worker creates its own Endpoint after the fork, and this process has no threads, so
forking it is safe.

Requests arrive on the control socket: one JSON object each ({"worker_id", "argv"}), with the
worker's end of its command socket attached (SCM_RIGHTS). The pool learns everything else from
that socket (the worker's hello, its events, EOF when it dies); this process only reaps its
children and logs how each ended.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import socket
import sys
import traceback
from types import FrameType

from pbx import worker

# A request is a few hundred bytes; one datagram-sized read holds it whole.
_REQUEST_BYTES = 64 * 1024


class ForkServer:
    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._children: dict[int, int] = {}  # pid -> worker id

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, self._reap)
        while True:
            message, fds, _flags, _address = socket.recv_fds(self._control, _REQUEST_BYTES, 1)
            if not message:
                # The pool closed the control socket: the service is stopping. Its workers
                # exit as their sockets close; reap them all, so none outlives the stop.
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                with contextlib.suppress(ChildProcessError):
                    while self._children:
                        self._reaped(*os.waitpid(-1, 0))
                return
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                print(f"forkserver: spawn request without its socket: {message!r}", flush=True)
                continue
            self._spawn(json.loads(message), fds[0])

    def _spawn(self, request: dict[str, object], channel_fd: int) -> None:
        argv = [str(arg) for arg in request["argv"]]  # type: ignore[attr-defined]
        worker_id = int(str(request["worker_id"]))
        pid = os.fork()
        if pid == 0:
            self._become_worker(argv, channel_fd)
        os.close(channel_fd)
        self._children[pid] = worker_id

    def _become_worker(self, argv: list[str], channel_fd: int) -> None:
        code = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self._control.close()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, sys.stdin.fileno())
            os.close(devnull)
            code = worker.main([*argv, "--channel-fd", str(channel_fd)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _reap(self, signum: int, frame: FrameType | None) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, status)

    def _reaped(self, pid: int, status: int) -> None:
        worker_id = self._children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        print(f"forkserver: worker {worker_id} (pid {pid}) exited with {code}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbx.forkserver", description=__doc__)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # SIGTERM (the pool's stop) ends the server; its workers hang up on their own when the
    # pool closes their sockets.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    control = socket.socket(fileno=args.control_fd)
    # Everything imported so far is shared with every worker: keep the collector off it, or
    # its passes would write to those objects' headers and copy their pages into each child.
    gc.collect()
    gc.freeze()
    ForkServer(control).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
