"""A TCP proxy a test owns: cut the broker off, freeze it, bring it back on the same port."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit


def free_port() -> int:
    """A local port nobody listens on (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpProxy:
    """Forward 127.0.0.1:<port> to `upstream` until stopped; restartable on the same port.

    `stop()` closes the listening socket and every open connection, as a dead broker would;
    `freeze()` keeps connections open but forwards nothing, as a paused or blocked one would.
    """

    def __init__(self, upstream: tuple[str, int], *, port: int = 0) -> None:
        self.upstream = upstream
        self.port = port
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._thawed = threading.Event()
        self._thawed.set()
        self._acceptor: threading.Thread | None = None

    def start(self) -> TcpProxy:
        listener = socket.create_server(("127.0.0.1", self.port))  # sets SO_REUSEADDR
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._running.set()
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()
        return self

    def url_for(self, url: str) -> str:
        """Return `url` (e.g. amqp://user:pw@host:5672/vhost) aimed at this proxy instead."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        address = f"127.0.0.1:{self.port}"
        netloc = f"{credentials}@{address}" if credentials else address
        return urlunsplit(parts._replace(netloc=netloc))

    def stop(self) -> None:
        """Stop listening and reset every forwarded connection."""
        self._running.clear()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
            self._acceptor = None
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _reset(sock)
        self._thawed.set()  # let held pipe threads run into their closed sockets and end

    def freeze(self) -> None:
        """Hold every byte in both directions (new connections are accepted, then hang)."""
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._running.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        client.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._thawed.wait()
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.difference_update((source, target))
            _reset(source)
            _reset(target)


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a polite FIN, so the peer sees a dead connection at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
