"""A TCP forwarder to a test's PostgreSQL that the test can cut (every connection dropped, new ones
refused) or silence (nothing passes any more, nothing is closed: a host that lost its link)."""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from types import TracebackType
from urllib.parse import urlencode

from psycopg.conninfo import conninfo_to_dict

from persistence.libpq import conninfo


class Forwarder:
    """A TCP port on 127.0.0.1 forwarding to PostgreSQL until `cut()`: then every connection
    through it is dropped and new ones are refused; or until `silence()`: then nothing more
    passes either way and new connections are taken and never answered, as when the database's
    host loses its link. Cut on leaving its `with`: a connection left silenced would hold a server
    backend whose notifications nobody reads, blocked in a write, and with it any DROP DATABASE."""

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(conninfo(url))
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self.upstream: tuple[int, str | tuple[str, int]] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/") else (socket.AF_INET, (host, port))
        )
        self.server = socket.create_server(("127.0.0.1", 0))
        params |= {"host": "127.0.0.1", "port": str(self.server.getsockname()[1]), "sslmode": "disable"}
        self.url = "postgresql://?" + urlencode(params)
        self.sockets: list[socket.socket] = []
        self.silent = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with suppress(OSError):
            while True:
                client, _ = self.server.accept()
                self.sockets.append(client)
                if self.silent.is_set():
                    continue
                upstream = socket.socket(self.upstream[0])
                upstream.connect(self.upstream[1])
                self.sockets.append(upstream)
                for one, other in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(one, other), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        with suppress(OSError):
            while (data := source.recv(65536)) and not self.silent.is_set():
                target.sendall(data)
            self.silent.wait()  # silent: what arrives is never passed on, and nothing is closed

    def silence(self) -> None:
        self.silent.set()

    def cut(self) -> None:
        for sock in (self.server, *self.sockets):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.cut()
