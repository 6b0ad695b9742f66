"""Round trips counted on the wire: a TCP relay between clients and Postgres.

A round trip is a wait: the client sends, then cannot go on before the server answers. On
the wire that is every turn from client-to-server bytes to server-to-client bytes, however
the messages are cut into packets (a pipelined batch of statements is one turn, a COPY that
streams rows is one turn for its start and one for its end). Counting turns needs no
protocol parsing, so it counts what the drivers really do: the ADBC driver's Describe before
each query, its catalog look-ups, psycopg's statements and every BEGIN and COMMIT.

Only for counting: the relay adds its own latency, so no line is timed through it.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from etl_worker.devtools.embedded import free_port

_CHUNK = 1 << 16


@dataclass
class _Connection:
    round_trips: int = 0
    client_sent_last: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class RoundTripRelay:
    """Listens on a free loopback port and relays every connection to `host:port`."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self._connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, name="rt-relay", daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def round_trips(self) -> int:
        with self._lock:
            return sum(c.round_trips for c in self._connections)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> RoundTripRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state = _Connection()
            with self._lock:
                self._connections.append(state)
            for source, sink, from_client in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, state, from_client), daemon=True
                ).start()

    @staticmethod
    def _pump(
        source: socket.socket, sink: socket.socket, state: _Connection, from_client: bool
    ) -> None:
        try:
            while data := source.recv(_CHUNK):
                # The turn is recorded before the bytes go on, so an answer can never be
                # seen before the request that caused it.
                with state.lock:
                    if not from_client and state.client_sent_last:
                        state.round_trips += 1
                    state.client_sent_last = from_client
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            source.close()  # each socket is the source of one pump: closed once
