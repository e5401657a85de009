"""What one request may still spend: time until its deadline, and only while its client is there."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Callable

from app.pipeline.errors import ClientGone, Overloaded


@dataclass(frozen=True)
class Budget:
    """Time until ``deadline`` (monotonic), while ``client_gone()`` is false. :meth:`check` runs
    between the CPU-bound steps: a request past its deadline stops with :class:`Overloaded`
    (``timeout``), one whose client left with :class:`ClientGone`, so that nobody's abandoned
    work holds the slot."""

    deadline: float
    client_gone: Callable[[], bool] = lambda: False

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self.client_gone():
            raise ClientGone("the client closed the connection; the work was dropped")
        if self.remaining_s() <= 0:
            raise Overloaded("server busy: the request ran past its deadline; retry later", 2, code="timeout")


UNLIMITED = Budget(float("inf"))  # work outside a request (benchmarks, tools)


def peer_closed(sock: socket.socket | None) -> Callable[[], bool]:
    """Whether the peer on ``sock`` has closed its side: a zero-byte peek. The request has been
    read by then, so readable data can only be a pipelined next request (still there)."""
    if sock is None:
        return lambda: False

    def closed() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    return closed
