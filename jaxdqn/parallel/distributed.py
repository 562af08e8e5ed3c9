"""Several processes (hosts) as one run: starting ``jax.distributed``, and what the loop needs of it.

Every host starts the same command with ``--distributed``. Before anything
touches a JAX backend, :func:`start` resolves who is who -- coordinator
address, number of processes, this process's id -- from the command line,
else from ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID``, else from JAX's own cluster detection (SLURM, Open MPI,
Cloud TPU, ...), meets the other processes at the coordinator, and calls
``jax.distributed.initialize``. After that ``jax.devices()`` lists every
process's devices, and the run's mesh (``jaxdqn.parallel.sharding``) spans them all.

The meeting comes first because JAX aborts the whole process (a C++ check,
not a Python error) when a peer never arrives; meeting over a plain socket
first lets a missing coordinator or a missing process end in one readable
line after ``timeout_s`` seconds.

Once running, process 0 alone writes files meant for people (config.yaml,
metrics.csv, TensorBoard, the progress bar); checkpoints are written by all
processes together (orbax); :func:`fetch` brings sharded values (statistics,
evaluation returns) to every process.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Any, Mapping

from jaxdqn.parallel import peer_watch
from jaxdqn.errors import JaxdqnError

ENV_VARS = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
FLAGS = {"coordinator_address": "--coordinator-address", "num_processes": "--num-processes", "process_id": "--process-id"}
DEFAULT_TIMEOUT_S = 300
_HELLO = "jaxdqn-distributed"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Who this process is in a multi-process run."""

    coordinator_address: str
    num_processes: int
    process_id: int
    timeout_s: int = DEFAULT_TIMEOUT_S

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.coordinator_address.rpartition(":")
        return host.strip("[]"), int(port)


def _int_setting(name: str, value: Any, source: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise JaxdqnError(f"--distributed: {source} is {value!r}; allowed: a whole number") from None


def resolve(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    environ: Mapping[str, str] | None = None,
    detect: bool = True,
) -> Cluster:
    """The cluster from flags, else environment variables, else JAX's cluster detection."""
    environ = os.environ if environ is None else environ
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    values: dict[str, Any] = {}
    for key, flag_value in given.items():
        if flag_value is not None:
            values[key] = flag_value if key == "coordinator_address" else _int_setting(key, flag_value, FLAGS[key])
        elif environ.get(ENV_VARS[key]):
            raw = environ[ENV_VARS[key]]
            values[key] = raw if key == "coordinator_address" else _int_setting(key, raw, ENV_VARS[key])
        else:
            values[key] = None
    if detect and None in values.values():
        values.update(_detect(values, timeout_s))
    for key, value in values.items():
        if value is None:
            raise JaxdqnError(
                f"--distributed: no {key.replace('_', ' ')}; pass {FLAGS[key]} or set {ENV_VARS[key]} "
                "(or start under a cluster manager JAX detects: SLURM, Open MPI, Cloud TPU)"
            )
    cluster = Cluster(values["coordinator_address"], values["num_processes"], values["process_id"], int(timeout_s))
    _check(cluster)
    return cluster


def _detect(values: dict, timeout_s: int) -> dict:
    """What JAX's cluster detection fills in for the unset values (SLURM, Open MPI, Cloud TPU, ...)."""
    from jax._src import clusters  # the detection jax.distributed.initialize itself runs

    address, count, pid, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        values["coordinator_address"], values["num_processes"], values["process_id"], None, None, timeout_s
    )
    return {"coordinator_address": address, "num_processes": count, "process_id": pid}


def _check(cluster: Cluster) -> None:
    if cluster.num_processes < 1:
        raise JaxdqnError(f"--distributed: number of processes is {cluster.num_processes}; allowed: 1 or more")
    if not 0 <= cluster.process_id < cluster.num_processes:
        raise JaxdqnError(
            f"--distributed: process id is {cluster.process_id}; allowed: 0 to {cluster.num_processes - 1} "
            f"(ids of {cluster.num_processes} processes)"
        )
    host, sep, port = cluster.coordinator_address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise JaxdqnError(f"--distributed: coordinator address is {cluster.coordinator_address!r}; allowed: HOST:PORT")
    if cluster.timeout_s < 1:
        raise JaxdqnError(f"--coordinator-timeout is {cluster.timeout_s}; allowed: 1 or more seconds")


def start(cluster: Cluster) -> None:
    """Meets the other processes, then ``jax.distributed.initialize``; call before any JAX computation."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise JaxdqnError("--distributed: JAX was already running in this process; start the distributed runtime first")
    if cluster.num_processes > 1:
        meet(cluster)
    import jax

    jax.distributed.initialize(
        coordinator_address=cluster.coordinator_address,
        num_processes=cluster.num_processes,
        process_id=cluster.process_id,
        initialization_timeout=cluster.timeout_s,
    )


# -- the meeting before jax.distributed --------------------------------------
#
# Process 0 listens on the coordinator's port; every other process connects,
# says its id and the process count, and waits for process 0's "go PORT", sent when
# all have arrived. Process 0 then frees the port for JAX's coordination service,
# and each peer opens the connection on PORT through which the processes notice a
# dead peer for the rest of the run (jaxdqn.parallel.peer_watch).


def meet(cluster: Cluster) -> None:
    if cluster.process_id == 0:
        _host_meeting(cluster)
    else:
        _join_meeting(cluster)


def _host_meeting(cluster: Cluster) -> None:
    _, port = cluster.host_port
    deadline = time.monotonic() + cluster.timeout_s
    try:
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=False)
        else:
            server = socket.create_server(("", port))
    except OSError as err:
        raise JaxdqnError(
            f"--distributed: process 0 cannot listen on port {port} of {cluster.coordinator_address} ({err.strerror})"
        ) from None
    arrived: dict[int, socket.socket] = {}
    try:
        while len(arrived) < cluster.num_processes - 1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(1, cluster.num_processes)) - set(arrived))
                raise JaxdqnError(
                    f"--distributed: process 0 waited {cluster.timeout_s} s at {cluster.coordinator_address} for "
                    f"process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {cluster.num_processes}; "
                    "start the same command on every host (or raise --coordinator-timeout)"
                )
            server.settimeout(remaining)
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            conn.settimeout(max(1.0, deadline - time.monotonic()))
            try:
                words = conn.makefile().readline().split()
            except OSError:
                conn.close()
                continue
            if len(words) != 3 or words[0] != _HELLO:
                conn.close()  # not one of ours
                continue
            pid, count = int(words[1]), int(words[2])
            if count != cluster.num_processes:
                conn.close()
                raise JaxdqnError(
                    f"--distributed: process {pid} says the run has {count} processes, process 0 says {cluster.num_processes}; "
                    "give every process the same --num-processes"
                )
            if pid in arrived:
                conn.close()
                raise JaxdqnError(f"--distributed: two processes claim process id {pid}; give each process its own id")
            arrived[pid] = conn
        watch_server, watch_port = peer_watch.listen()
        for conn in arrived.values():
            conn.sendall(f"go {watch_port}\n".encode())
        for conn in arrived.values():  # let each peer close first, so the port is free at once for JAX's service
            try:
                conn.settimeout(5.0)
                conn.recv(1)
            except OSError:
                pass
    finally:
        for conn in arrived.values():
            conn.close()
        server.close()
    try:
        peer_watch.accept(watch_server, cluster.num_processes - 1, 0, max(10.0, deadline - time.monotonic()))
    except ConnectionError as err:
        raise JaxdqnError(f"--distributed: {err}") from None


def _join_meeting(cluster: Cluster) -> None:
    host, port = cluster.host_port
    deadline = time.monotonic() + cluster.timeout_s
    unreachable = JaxdqnError(
        f"--distributed: process {cluster.process_id} could not reach the coordinator at {cluster.coordinator_address} "
        f"within {cluster.timeout_s} s; is process 0 running there, and is the port open? (--coordinator-timeout sets the wait)"
    )
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise unreachable
        try:
            conn = socket.create_connection((host, port), timeout=min(5.0, remaining))
        except OSError:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            continue
        try:
            conn.settimeout(max(1.0, deadline - time.monotonic()))
            conn.sendall(f"{_HELLO} {cluster.process_id} {cluster.num_processes}\n".encode())
            reply = conn.makefile().readline().strip()
        except OSError:
            reply = ""
        finally:
            conn.close()
        if reply.startswith("go "):
            try:
                peer_watch.join(host, int(reply.split()[1]), cluster.process_id, max(10.0, deadline - time.monotonic()))
            except OSError as err:
                raise JaxdqnError(
                    f"--distributed: process {cluster.process_id} met process 0 but could not open its watch connection "
                    f"to {host}:{reply.split()[1]} ({err.strerror or err}); the port must be reachable like the coordinator's"
                ) from None
            return
        if deadline - time.monotonic() <= 0:
            raise unreachable
        time.sleep(0.5)  # process 0 refused us (or went away); try again until the deadline


# -- inside a running multi-process run ----------------------------------------


def process_count() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """Whether this process writes the files meant for people (process 0)."""
    import jax

    return jax.process_index() == 0


def fetch(tree: Any) -> Any:
    """NumPy copies of (possibly sharded) arrays, the same on every process.

    With several processes each holds only its own shards; this gathers the
    rest from the others (a collective: every process must call it).
    """
    import jax

    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def agree(value: int) -> int:
    """Process 0's ``value`` on every process (an int32), e.g. the time stamp of a run directory's name."""
    import jax

    if jax.process_count() == 1:
        return int(value)
    import numpy as np
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (a collective with several processes)."""
    import jax

    if jax.process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).max())


def check_supported(cfg) -> None:
    """Refuses, in one line, what a multi-process run does not support."""
    from jaxdqn.envs.envpool_env import is_atari_id

    for i, task in enumerate(cfg.tasks):
        if is_atari_id(task.env_id):
            raise JaxdqnError(
                f"--distributed: tasks.{i}.env_id is {task.env_id!r}, an Atari (envpool) task; Atari runs use one "
                "process (all of its host's GPUs); across hosts use gymnax or MinAtar tasks"
            )
