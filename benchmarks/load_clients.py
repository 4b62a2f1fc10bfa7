"""Load clients in a separate process: keep-alive HTTP POST loops over one shared time window.

Started by ``benchmarks/serving.py`` (several at once) so the clients of a throughput window are
not all in the benchmark's own Python process, whose one GIL would then cap the rate it measures.
Plain standard library (no TensorFlow to import: the process starts in well under a second).

Takes one JSON object as its one argument::

    {"port": int, "path": str, "body_file": str, "threads": int, "start_at": float, "seconds": float}

``start_at`` is a ``time.time()`` instant: each thread connects and sends one warm-up request
first, then loops from ``start_at`` for ``seconds``. Prints ``{"done": int}`` (requests answered
200 that completed inside the window) on stdout; any other answer fails the process (exit 1).
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time


def client_loop(port: int, path: str, body: bytes, start_at: float, end_at: float, done: list[int]) -> None:
    """One keep-alive connection: a warm-up request, then POSTs from ``start_at`` until ``end_at``.

    Appends the count of 200 answers completed in the window to ``done`` (a list shared by threads).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}

    def post() -> None:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path} answered {response.status}: {payload[:300]!r}")

    post()
    time.sleep(max(0.0, start_at - time.time()))
    count = 0
    while time.time() < end_at:
        post()
        if time.time() <= end_at:
            count += 1
    connection.close()
    done.append(count)


def main() -> None:
    job = json.loads(sys.argv[1])
    with open(job["body_file"], "rb") as handle:
        body = handle.read()
    end_at = job["start_at"] + job["seconds"]
    done: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            client_loop(job["port"], job["path"], body, job["start_at"], end_at, done)
        except BaseException as error:  # reported below: a failed client fails the window
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(job["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} client(s) failed: {errors[0]!r}")
    print(json.dumps({"done": sum(done)}))


if __name__ == "__main__":
    main()
