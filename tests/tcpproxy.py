"""A TCP proxy a test controls: put it between the bridge and a server, then cut the line."""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    """Forwards 127.0.0.1:<port> to *upstream*; :meth:`cut` drops every connection and
    refuses new ones until :meth:`restore`; :meth:`hang` keeps every connection open and
    forwards nothing (a stopped server whose kernel still answers TCP) until :meth:`restore`."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    if self._flowing.is_set():
                        raise
                    continue  # hung: the connection stays open, however long it is silent
                if not data:
                    break
                self._flowing.wait()
                target.sendall(data)
        _close(source, target)

    def hang(self) -> None:
        self._flowing.clear()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def restore(self) -> None:
        self._open.set()
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
