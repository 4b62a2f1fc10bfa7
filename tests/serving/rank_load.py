"""A client's load loop for the shutdown tests: ranks over keep-alive connections and records
every answer's status, or how a request was lost, so a test can check that none was."""

from __future__ import annotations

import http.client
import threading

RANK = "/v1/models/clicklog:rank"


def rank_until_refused(port: int, body: bytes, outcomes: list[str], stop: threading.Event,
                       reconnect: bool) -> None:
    """Sends ``body`` to ``:rank`` on 127.0.0.1:``port`` until ``stop`` is set or a request cannot
    be sent (not accepted: nothing lost). Only a request sent and then not answered is lost.

    Args:
        port: int. The server's REST port.
        body: bytes. A rank request, JSON.
        outcomes: list, appended one entry per request: its status (``"200"``), or
            ``"lost: <error>"`` for a request sent and not answered.
        stop: set to end the loop.
        reconnect: when the server closes a connection (``Connection: close``), open a new one
            (a pool of workers, some still serving) instead of returning (a client, or load
            balancer, going elsewhere).
    """
    while not stop.is_set():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while not stop.is_set():
                try:
                    connection.request("POST", RANK, body=body, headers={"Content-Type": "application/json"})
                except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
                    # never read by the server: refused, or reset in a closing listener's queue
                    # (SO_REUSEPORT: a draining worker's socket closes with connections the kernel
                    # queued on it) or on an idle keep-alive connection it closed. Safe to retry.
                    return
                except OSError as error:
                    outcomes.append(f"lost: {type(error).__name__}")
                    return
                try:
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as error:
                    outcomes.append(f"lost: {type(error).__name__}: {error}")
                    return
                outcomes.append(str(response.status))
                if response.will_close:
                    break
        finally:
            connection.close()
        if not reconnect:
            return
