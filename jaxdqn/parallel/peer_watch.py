"""Noticing a dead peer process, and stopping in a bounded time instead of hanging.

A process killed with SIGKILL cannot say goodbye, and JAX's collectives and
coordination service wait for it: the survivors block, and about 100 s later
the coordination service aborts them with a C++ stack trace, saving nothing.
So beside JAX's own channels every process keeps one plain TCP connection to
process 0 for the whole run. The operating system closes a dead process's
sockets at once, so the other end reads end-of-file within moments; its
watcher thread then prints one line -- which process is gone and which
checkpoint to resume from -- and ends this process with :data:`EXIT_STATUS`.
Process 0 watches every peer and every peer watches process 0, so the death
of any process stops all of them (the others learn it when process 0 stops).

When process 0 itself dies, JAX's coordination service dies with it, and the
coordination client in each other process notices at once too and aborts that
process (status -6, a C++ message) unless the watcher is quicker; so a watcher of
process 0 stops without the grace below. (The client takes a Python callback in
place of the abort, but on jaxlib 0.10 calling it fails to convert its status
argument and aborts all the same.)

A collective over the dead peer's connection may fail in the main thread a
moment before the watcher reads end-of-file; the command line then hands that
error to :func:`stop_if_a_peer_is_gone`, which ends the process with the same
one line instead of a traceback. A library's background thread may log such an
error too (orbax's checkpoint signalling thread does, with its traceback): while
peers are watched, a filter on the ``absl`` logger holds such a record until the
watcher confirms or clears the peer, and drops it when the peer is gone.

A process that ends as planned (the run finished, or a preemption signal saved
it) first sends ``bye`` (:func:`leave`), and the other side stops watching it.
Process 0 listens for these connections on a port the system picks; it sends
the port to the peers in the meeting before ``jax.distributed`` starts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

# EX_PROTOCOL of sysexits.h. Like a preemption (75), a run stopped this way resumes with --resume.
EXIT_STATUS = 76
# After end-of-file, the main thread gets this long to end the process itself: when every process
# stops on the same error at once, each should exit with that error's status, not with EXIT_STATUS.
GRACE_S = 2.0
_BYE = b"bye\n"

_connections: list[socket.socket] = []
_leaving = threading.Event()
_gone = threading.Event()  # set when a watched process closed its connection without saying bye
_gone_ids: list[tuple[int, int]] = []  # (the process that is gone, this process)
_stopping = threading.Lock()
_checkpoint_dir: list[Path] = []


def listen() -> tuple[socket.socket, int]:
    """Process 0: a listening socket for the watch connections, and its port."""
    if socket.has_dualstack_ipv6():
        server = socket.create_server(("", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    else:
        server = socket.create_server(("", 0))
    return server, server.getsockname()[1]


def accept(server: socket.socket, num_peers: int, process_id: int, timeout_s: float) -> None:
    """Process 0: takes one connection from each peer (which says its id) and watches them all."""
    deadline = time.monotonic() + timeout_s
    try:
        for _ in range(num_peers):
            server.settimeout(max(0.1, deadline - time.monotonic()))
            conn, _ = server.accept()
            conn.settimeout(max(1.0, deadline - time.monotonic()))
            peer = int(conn.makefile().readline().strip())
            conn.settimeout(None)
            _watch(conn, peer, process_id)
    except (OSError, ValueError) as err:
        raise ConnectionError(f"a peer did not open its watch connection to process 0 ({err})") from None
    finally:
        server.close()


def join(host: str, port: int, process_id: int, timeout_s: float) -> None:
    """A peer: connects to process 0's watch port, says its id, and watches process 0."""
    conn = socket.create_connection((host, port), timeout=timeout_s)
    conn.sendall(f"{process_id}\n".encode())
    conn.settimeout(None)
    _watch(conn, 0, process_id)


def resume_from(checkpoint_dir: str | Path) -> None:
    """Where the run keeps its checkpoints, for the line printed when a peer is gone."""
    _checkpoint_dir[:] = [Path(checkpoint_dir)]


def leave() -> None:
    """Tells the other processes that this one ends as planned (a no-op with one process)."""
    _leaving.set()
    for conn in _connections:
        try:
            conn.sendall(_BYE)
        except OSError:
            pass  # that peer is already gone


def _watch(conn: socket.socket, other: int, me: int) -> None:
    if not _connections:
        logging.getLogger("absl").addFilter(_drop_lost_connection_logs)
    _connections.append(conn)
    threading.Thread(target=_wait_for_end, args=(conn, other, me), name=f"peer-watch-{other}", daemon=True).start()


def _wait_for_end(conn: socket.socket, other: int, me: int) -> None:
    try:
        said = conn.recv(len(_BYE))
    except OSError:
        said = b""
    if said == _BYE or _leaving.is_set():
        return
    _gone_ids.append((other, me))
    _gone.set()
    if other != 0:
        time.sleep(GRACE_S)
    if not _leaving.is_set():
        _stop(other, me)


def stop_if_a_peer_is_gone(err: BaseException, wait_s: float = GRACE_S + 3.0) -> None:
    """For an error the main thread does not handle: when it is a collective that failed
    because a peer is gone, ends this process as the watcher would (one line, EXIT_STATUS).

    A collective over a dead peer's connection can fail in the main thread (gloo: "Connection
    reset by peer") a moment before the watcher reads end-of-file, so this waits up to ``wait_s``
    for the watcher to confirm. Any other error returns, for the caller to raise.
    """
    if not _connections or not _is_lost_connection(err):
        return
    if _gone.wait(wait_s):
        _stop(*_gone_ids[0])


def _drop_lost_connection_logs(record: logging.LogRecord) -> bool:
    """A logging filter: False (drop) for a record of a lost-connection error once a peer is gone."""
    err = record.exc_info[1] if record.exc_info else None
    if err is None or not _is_lost_connection(err):
        return True
    return not _gone.wait(GRACE_S + 3.0)


def _is_lost_connection(err: BaseException) -> bool:
    from jax.errors import JaxRuntimeError

    message = str(err).lower()
    return isinstance(err, JaxRuntimeError) and any(word in message for word in ("gloo", "connection", "socket"))


def _stop(other: int, me: int) -> None:
    """Prints the one line about the process that is gone and ends this process."""
    with _stopping:  # process 0 watches every peer: when several die, the first watcher to get here ends it
        try:
            print(
                f"jaxdqn: process {other} of the run is gone; stopping process {me}. {_resume_line()}",
                file=sys.stderr,
                flush=True,
            )
        except OSError:
            pass  # nobody reads stderr any more (the launcher died too): stop all the same
        finally:
            os._exit(EXIT_STATUS)


def _resume_line() -> str:
    if not _checkpoint_dir:
        return "No checkpoint was written yet: start the run again."
    from jaxdqn.io.checkpoint import complete_steps

    steps = complete_steps(_checkpoint_dir[0])
    if not steps:
        return f"No checkpoint was written yet in {_checkpoint_dir[0]}: start the run again."
    return (
        f"The newest checkpoint is at env step {steps[-1]} in {_checkpoint_dir[0]}: "
        "run the same command with --resume on every process."
    )
