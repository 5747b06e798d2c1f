"""A TCP proxy between the gateways and their database that the suite can break on purpose.

``FaultyProxy(target_port)`` listens on a free loopback port and forwards every connection to
``127.0.0.1:target_port``, byte for byte, until told otherwise:

- ``drop(seconds)``: every open connection is closed (a FIN both ways) and, for ``seconds``,
  each new one is accepted and closed at once: the database has gone away;
- ``reset()``: every open connection is aborted with a RST (``SO_LINGER`` 0), as a firewall or a
  load balancer that forgot the connection would; new ones go through;
- ``stall(seconds)``: nothing is forwarded either way for ``seconds``, on open connections and on
  new ones (accepted, not yet connected onwards), then everything flows again: a network that
  stops delivering and comes back;
- ``lose_reply_to(marker)``: the next message from a client that contains ``marker`` (say
  ``b"COMMIT"``) reaches the server, and its reply never comes back: the connection is reset
  once the server has had time to act on it (a commit acknowledged by the server, lost on the way).

The proxy's own kernel still acknowledges what the clients send while it stalls, so a stall
here is a slow network, not a black hole in which TCP itself gives up (see docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time

from tests.support.servers import free_port

HOST = "127.0.0.1"
_CHUNK = 65536


class FaultyProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port(HOST)
        self._listener = socket.create_server((HOST, self.port), backlog=256)
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._dropped_until = 0.0
        self._closed = False
        self._marker: bytes | None = None
        self._away_after_loss_s = 0.0
        self.replies_lost = 0
        self.connections = 0  # accepted in all
        self.cut = 0  # connections closed or reset by a fault
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._acceptor.start()

    # ---- faults ----

    def drop(self, seconds: float) -> None:
        self._dropped_until = time.monotonic() + seconds
        self._close_all(rst=False)

    def reset(self) -> None:
        self._close_all(rst=True)

    def stall(self, seconds: float) -> None:
        self._flowing.clear()
        try:
            time.sleep(seconds)
        finally:
            self._flowing.set()

    def lose_reply_to(self, marker: bytes, then_away_s: float = 0.0) -> None:
        """Forward the next message from the client holding ``marker``, throw the server's answer
        away and cut the connection; then, if ``then_away_s``, keep the database away (every
        connection refused) that long, as a server killed just after a commit would be."""
        self._marker = marker
        self._away_after_loss_s = then_away_s

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._close_all(rst=False, count=False)

    # ---- forwarding ----

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if time.monotonic() < self._dropped_until:
                client.close()
                continue
            threading.Thread(target=self._connect, args=(client,), name="proxy-conn", daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()
        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()  # the database is down: the client sees its connection closed
            return
        pair = (client, upstream)
        with self._lock:
            self._pairs.add(pair)
        threading.Thread(target=self._pump, args=(client, upstream, pair, True), daemon=True).start()
        self._pump(upstream, client, pair)

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        pair: tuple[socket.socket, socket.socket],
        from_client: bool = False,
    ) -> None:
        try:
            while not self._closed:
                readable, _, _ = select.select([source], [], [], 0.5)
                if not readable:
                    continue
                data = source.recv(_CHUNK)
                if not data:
                    break
                self._flowing.wait()  # a stall holds what was read until the network returns
                marker = self._marker
                if from_client and marker is not None and marker in data:
                    self._marker = None
                    with self._lock:
                        self._pairs.discard(pair)  # nothing more goes back to the client
                    self.replies_lost += 1
                    sink.sendall(data)
                    time.sleep(0.3)  # the server commits and answers; the answer is thrown away
                    if self._away_after_loss_s:
                        self.drop(self._away_after_loss_s)
                    self._abort(pair)
                    return
                sink.sendall(data)
        except (OSError, ValueError):  # a fault closed the socket under select (fd -1)
            pass
        finally:
            self._forget(pair)

    def _forget(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _abort(self, pair: tuple[socket.socket, socket.socket]) -> None:
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def _close_all(self, *, rst: bool, count: bool = True) -> None:
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    if rst:  # close with SO_LINGER 0 sends a RST instead of a FIN
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    else:
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
        if count:
            self.cut += len(pairs)
