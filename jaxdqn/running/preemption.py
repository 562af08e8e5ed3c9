"""Stopping a run on a scheduler's signal: save the chunk in flight, then exit.

SLURM sends SIGTERM on preemption and at the time limit (and, with
``--signal=USR1@SECONDS``, SIGUSR1 that many seconds ahead). While a run is in
the host loop, either signal only sets a flag: the chunk in flight finishes (in
host-stepped Atari, the iteration in flight), the loop saves a checkpoint of it
and raises :class:`Preempted`, and the command line exits with
:data:`EXIT_STATUS`. With several processes the flag is agreed at the end of
every chunk, so all of them save the same checkpoint together.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# EX_TEMPFAIL of sysexits.h: "try again later". A requeue script resumes on it.
EXIT_STATUS = 75

_requested = threading.Event()
_received: list[str] = []


class Preempted(Exception):
    """A signal stopped the run after its checkpoint at ``env_steps`` was saved."""

    def __init__(self, signal_name: str, env_steps: int, checkpoint_dir: str):
        super().__init__(
            f"{signal_name}: saved a checkpoint at env step {env_steps} in {checkpoint_dir}; "
            f"run the same command with --resume (or --resume auto) to continue"
        )
        self.env_steps = env_steps


def requested() -> bool:
    """Whether a stop signal arrived since :func:`install`."""
    return _requested.is_set()


def signal_name() -> str:
    return _received[0] if _received else "signal"


def install():
    """Turns SIGTERM and SIGUSR1 into a request to stop at the next chunk boundary;
    returns the function that puts the previous handlers back. Signals reach the
    main thread only; elsewhere this does nothing."""
    _requested.clear()
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        _received.append(signal.Signals(signum).name)
        _requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}

    def restore():
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
