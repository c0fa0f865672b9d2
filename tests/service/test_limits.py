"""Request limits (service/limits.py): a body limit enforced on the ASGI receive stream before anything
parses it, authentication before a byte of a body is read, and a body read timeout.

Unit tests drive the app's ASGI callable directly (to see exactly how much of a body was read) or through
the TestClient; the last tests run ``vqrec serve`` on 127.0.0.1 and send it real 50 MB uploads and stalled
ones over raw sockets, every loop and wait bounded.
"""

from __future__ import annotations

import functools
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vqrec.service.main import create_app
from vqrec.service.settings import Settings

URL = "/v1/indexes/demo"
READ, ADMIN = "read-key-1", "admin-key-1"
MiB = 1024 * 1024


# ---- a raw ASGI request: how many body chunks did the app pull? -----------------------------------
class Upload:
    """An ASGI receive callable: ``chunks`` body chunks of ``size`` bytes, then (``stall``) nothing ever again."""

    def __init__(self, chunks: int, size: int = 1000, *, stall: bool = False) -> None:
        self.chunks, self.size, self.stall = chunks, size, stall
        self.calls = 0
        self.delivered = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.delivered < self.chunks:
            self.delivered += 1
            more = self.stall or self.delivered < self.chunks
            return {"type": "http.request", "body": b"x" * self.size, "more_body": more}
        if self.stall:
            await anyio.sleep(30)  # a client that stopped sending (the test bounds the whole call)
        return {"type": "http.disconnect"}


def asgi(
    app: Any, path: str, receive: Upload, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, str], dict[str, Any], float]:
    """One request straight into the ASGI app (no lifespan needed: nothing here gets past the body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> float:
        t0 = time.perf_counter()
        with anyio.fail_after(10):
            await app(scope, receive, send)
        return time.perf_counter() - t0

    took = anyio.run(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    hdrs = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], hdrs, json.loads(body), took


def check_refusal(status: int, hdrs: dict[str, str], body: dict[str, Any], want: int, code: str) -> str:
    assert status == want, body
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert hdrs.get("connection") == "close", hdrs  # the rest of the body is never read: the server hangs up
    assert hdrs.get("x-request-id"), hdrs  # inside the observability middleware: counted, logged, has an id
    return str(body["error"]["message"])


@pytest.fixture(scope="module")
def keyed_app(index_root: str) -> Any:
    return create_app(
        Settings(index_root=index_root, max_body_bytes=10_000, api_keys=[READ], admin_keys=[ADMIN])  # type: ignore[list-item]
    )


def test_content_length_over_the_limit_is_413_without_reading_the_body(keyed_app: Any) -> None:
    up = Upload(chunks=50_000)  # 50 MB
    status, hdrs, body, took = asgi(
        keyed_app, f"{URL}/recommend", up, {"content-length": str(50_000_000), "x-api-key": READ}
    )
    msg = check_refusal(status, hdrs, body, 413, "payload_too_large")
    assert "10000 bytes" in msg and "50000000" in msg and "VQREC_MAX_BODY_BYTES" in msg, msg
    assert body["error"]["details"] == {"max_body_bytes": 10_000, "content_length": 50_000_000}
    assert up.calls == 0, "the body was read"
    assert took < 1.0


def test_unauthenticated_body_is_401_before_it_is_read(keyed_app: Any) -> None:
    """Authentication comes first: no key (or an unknown one) is 401 and not a byte of the body is read,
    whatever its size; a read key on an admin route is 403 the same way."""
    for headers, want, code in (
        ({"content-length": str(50_000_000)}, 401, "unauthorized"),
        ({"content-length": "200", "authorization": "Bearer nope"}, 401, "unauthorized"),
        ({"transfer-encoding": "chunked"}, 401, "unauthorized"),
    ):
        up = Upload(chunks=50_000)
        status, hdrs, body, _ = asgi(keyed_app, f"{URL}/recommend", up, headers)
        check_refusal(status, hdrs, body, want, code)
        assert hdrs.get("www-authenticate") == "Bearer"
        assert up.calls == 0, (headers, "the body was read")
    up = Upload(chunks=50_000)
    status, hdrs, body, _ = asgi(
        keyed_app, "/v1/admin/indexes/demo/reload", up, {"content-length": str(50_000_000), "x-api-key": READ}
    )
    check_refusal(status, hdrs, body, 403, "forbidden")
    assert up.calls == 0


def test_streamed_body_is_counted_and_refused_when_it_passes_the_limit(keyed_app: Any) -> None:
    """No Content-Length (chunked): the body is counted as it arrives; the chunk that passes 10,000 bytes
    is the last one read, and the route never runs."""
    up = Upload(chunks=50_000, size=1000)
    status, hdrs, body, took = asgi(
        keyed_app, f"{URL}/recommend", up, {"transfer-encoding": "chunked", "authorization": f"Bearer {READ}"}
    )
    msg = check_refusal(status, hdrs, body, 413, "payload_too_large")
    assert "10000 bytes" in msg and "VQREC_MAX_BODY_BYTES" in msg, msg
    assert up.delivered == 11, up.delivered  # 11,000 bytes: the first chunk over the limit
    assert took < 1.0


def test_a_body_within_the_limit_goes_through(index_root: str, make_client: Any) -> None:
    with make_client(Settings(index_root=index_root, max_body_bytes=300)) as c:
        ok = c.post(f"{URL}/recommend", json={"user_id": "u1", "k": 2, "exclude_item_ids": ["1"] * 20})
        assert ok.status_code == 200, ok.text
        big = c.post(f"{URL}/recommend", json={"user_id": "u1", "k": 2, "exclude_item_ids": ["1"] * 100})
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large", big.text
        assert "300 bytes" in big.json()["error"]["message"]
        assert c.get("/healthz").status_code == 200
        metrics = c.get("/metrics").text
    # counted under the route's template, like any other answer
    counted = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "vqrec_requests_total"
    }
    assert counted[("/v1/indexes/{name}/recommend", "POST", "413")] == 1, counted


def test_stalled_body_is_408_after_the_timeout(index_root: str) -> None:
    app = create_app(Settings(index_root=index_root, body_timeout_seconds=0.3))
    up = Upload(chunks=1, size=100, stall=True)
    status, hdrs, body, took = asgi(app, f"{URL}/recommend", up, {"content-length": "1000"})
    msg = check_refusal(status, hdrs, body, 408, "request_timeout")
    assert "0.3" in msg and "VQREC_BODY_TIMEOUT_SECONDS" in msg and "100 of 1000" in msg, msg
    assert 0.25 < took < 2.0, took


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Settings(index_root=str(tmp_path))
    assert (s.max_body_bytes, s.body_timeout_seconds) == (16 * MiB, 30.0)
    monkeypatch.setenv("VQREC_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("VQREC_BODY_TIMEOUT_SECONDS", "2.5")
    s = Settings(index_root=str(tmp_path))
    assert (s.max_body_bytes, s.body_timeout_seconds) == (2048, 2.5)
    from pydantic import ValidationError

    for bad in ({"max_body_bytes": 0}, {"body_timeout_seconds": 0}, {"body_timeout_seconds": float("inf")}):
        with pytest.raises(ValidationError):
            Settings(index_root=str(tmp_path), **bad)


# ---- against a real server (vqrec serve on 127.0.0.1) ---------------------------------------------
def vqrec_exe() -> str:
    exe = Path(sys.executable).parent / "vqrec"
    return str(exe) if exe.exists() else "vqrec"


class Live:
    def __init__(self, base: str, port: int, pid: int) -> None:
        self.base, self.port, self.pid = base, port, pid

    def status_mb(self, field: str) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field}")

    def rss_mb(self) -> float:
        return self.status_mb("VmRSS")

    def reset_peak(self) -> bool:
        """Reset the server's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def live(index_root: str, server: Any, free_port: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """``vqrec serve`` with keys, the default body limit and a 1 s body timeout; its pid from a wrapper
    that execs it (same process)."""
    port = free_port()
    pidfile = tmp_path_factory.mktemp("live") / "pid"
    argv = ["bash", "-c", 'echo $$ > "$0"; exec "$@"', str(pidfile), vqrec_exe(), "serve",
            "--index-root", index_root, "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    env = {"VQREC_API_KEYS": READ, "VQREC_ADMIN_KEYS": ADMIN, "VQREC_BODY_TIMEOUT_SECONDS": "1",
           "VQREC_LOG_LEVEL": "warning"}  # fmt: skip
    with server(argv, port, env=env, timeout=60) as base:
        yield Live(base, port, int(pidfile.read_text()))


@functools.cache
def big_json(mib: int) -> bytes:
    """A well-formed query of about ``mib`` MiB: one user and a long exclusion list (what a server that
    parses first would spend seconds and hundreds of MB on)."""
    n = mib * MiB // 12
    return b'{"user_id": "u1", "k": 5, "exclude_item_ids": [' + b'"i12345678",' * n + b'"i0"]}'


def raw_upload(
    port: int,
    path: str,
    body: bytes,
    *,
    key: str | None,
    chunked: bool = False,
    pace: float = 0.0,
    limit_s: float = 10.0,
) -> tuple[int | None, float, dict[str, Any] | None, int]:
    """POST ``body`` to ``path`` over a raw socket: the head (Content-Length, or chunked), then the body
    in 1 MiB pieces (``pace`` seconds apart) for as long as the server has not answered. Returns (status,
    seconds from the head to the answer, error body, MiB of body sent); status None when no answer came
    within ``limit_s``."""
    total = len(body)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"X-API-Key: {key}\r\n" if key else ""
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=limit_s)
    sent = 0
    answered_at = None
    t0 = time.perf_counter()
    try:
        sock.sendall(head.encode())
        while sent < total and time.perf_counter() - t0 < limit_s:
            if select.select([sock], [], [], pace if sent else 0)[0]:
                break
            piece = body[sent : sent + MiB]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            sent += len(piece)
        if chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass  # the server answered and hung up (or stopped reading): read what it said
    data = b""
    try:
        remaining = max(0.1, limit_s - (time.perf_counter() - t0))
        if select.select([sock], [], [], remaining)[0]:
            answered_at = time.perf_counter()
            sock.settimeout(2)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                head_end = data.find(b"\r\n\r\n")
                if head_end >= 0:
                    lengths = [ln for ln in data[:head_end].split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                    if lengths and len(data) >= head_end + 4 + int(lengths[0].split(b":")[1]):
                        break
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
    if answered_at is None or not data.startswith(b"HTTP/1.1 "):
        return None, time.perf_counter() - t0, None, sent // MiB
    status = int(data.split()[1])
    answer = data.split(b"\r\n\r\n", 1)[1]
    return status, answered_at - t0, json.loads(answer) if answer else None, sent // MiB


class HealthProbe:
    """GET /healthz every 20 ms on another thread (bounded by stop()); the slowest answer and the count."""

    def __init__(self, base: str) -> None:
        self.base, self.times, self.failures = base, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get(f"{self.base}/healthz").status_code == 200
                except httpx.HTTPError as e:
                    ok = False
                    self.failures.append(repr(e))
                if ok:
                    self.times.append(time.perf_counter() - t0)
                self._stop.wait(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_real_server_refuses_50mb_at_once_and_memory_stays_flat(live: Live) -> None:
    # warm up every path once (lazy imports, first allocations), then measure
    raw_upload(live.port, f"{URL}/recommend", big_json(50), key=READ, limit_s=10)
    raw_upload(live.port, f"{URL}/recommend", big_json(50), key=None, limit_s=10)
    rss_before = live.rss_mb()
    peak_known = live.reset_peak()
    results = []
    with HealthProbe(live.base) as probe:
        rounds = 0
        while rounds < 3 or (len(probe.times) < 10 and rounds < 200):  # until /healthz answered meanwhile
            rounds += 1
            for path, key, want in (
                (f"{URL}/recommend", READ, 413),
                (f"{URL}/recommend/batch", ADMIN, 413),
                (f"{URL}/recommend", None, 401),
                ("/v1/admin/indexes/demo/reload", None, 401),
            ):
                status, took, body, sent = raw_upload(live.port, path, big_json(50), key=key, limit_s=10)
                code = (body or {}).get("error", {}).get("code")
                results.append((path, key is not None, want, status, code, round(took, 3), sent))
    rss_after, peak = live.rss_mb(), live.status_mb("VmHWM")
    report = f"{len(results)} uploads (path, keyed, want, got, code, seconds, MiB sent): {results[:8]}...; "
    report += f"RSS {rss_before:.0f} -> {rss_after:.0f} MB, peak {peak:.0f} MB"
    report += f"; healthz: {len(probe.times)} answers, slowest {max(probe.times, default=-1):.3f}s, {probe.failures}"
    assert all(status == want for _, _, want, status, _, _, _ in results), report
    assert all(code == "payload_too_large" for _, _, want, _, code, _, _ in results if want == 413), report
    assert all(took < 0.5 for *_, took, _ in results), report
    assert probe.times and max(probe.times) < 0.5 and not probe.failures, report
    assert rss_after - rss_before < 20, report
    assert not peak_known or peak - rss_before < 20, report
    # the body of a refused upload was never wanted: the server answered before most of it was sent
    assert all(sent < 50 for *_, sent in results), report
    r = httpx.post(f"{live.base}{URL}/recommend", json={"user_id": "u1", "k": 3}, headers={"X-API-Key": READ})
    assert r.status_code == 200, r.text


def test_real_server_counts_a_streamed_50mb_body(live: Live) -> None:
    """Chunked, no Content-Length: refused once 16 MiB (the default limit) have arrived, in well under a
    second; sent at 1 MiB per 50 ms, /healthz keeps answering meanwhile. Memory is held only up to the
    limit while it arrives, and given back."""
    rss_before = live.rss_mb()
    peak_known = live.reset_peak()
    status, took, body, sent = raw_upload(live.port, f"{URL}/recommend", big_json(50), key=READ, chunked=True)
    with HealthProbe(live.base) as probe:
        paced = raw_upload(live.port, f"{URL}/recommend", big_json(50), key=READ, chunked=True, pace=0.05)
    rss_after, peak = live.rss_mb(), live.status_mb("VmHWM")
    report = f"status {status} after {took:.3f}s, {sent} MiB sent; paced: {paced[0]} after {paced[1]:.3f}s, "
    report += f"{paced[3]} MiB sent; RSS {rss_before:.0f} -> {rss_after:.0f} MB, peak {peak:.0f} MB"
    report += f"; healthz: {len(probe.times)} answers, slowest {max(probe.times, default=-1):.3f}s"
    assert status == 413 and body is not None and body["error"]["code"] == "payload_too_large", report
    assert str(16 * MiB) in body["error"]["message"], body
    assert took < 1.0, report
    assert sent < 40, report
    assert paced[0] == 413 and 16 <= paced[3] < 20 and paced[1] < 2.0, report
    assert len(probe.times) >= 5 and max(probe.times) < 0.5 and not probe.failures, report
    assert rss_after - rss_before < 20, report
    assert not peak_known or peak - rss_before < 16 + 20, report


def test_real_server_stalled_uploads_get_408_and_are_closed(live: Live) -> None:
    """20 uploads that stop mid-body: each gets 408 after the 1 s body timeout and the server closes the
    connection (none keeps a slot); the server answers normally meanwhile and afterwards."""
    socks = []
    t0 = time.perf_counter()
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        s.sendall(
            f"POST {URL}/recommend HTTP/1.1\r\nHost: x\r\nX-API-Key: {READ}\r\nContent-Type: application/json\r\n"
            f'Content-Length: 1000\r\n\r\n{{"user_id": '.encode()
        )
        socks.append(s)
    assert httpx.get(f"{live.base}/healthz", timeout=2).status_code == 200
    answers = []
    for s in socks:
        data = b""
        deadline = time.perf_counter() + 8
        try:
            while time.perf_counter() < deadline:
                s.settimeout(max(0.05, deadline - time.perf_counter()))
                chunk = s.recv(65536)
                if not chunk:
                    break  # closed by the server
                data += chunk
            else:
                data += b"<still open>"
        except TimeoutError:
            data += b"<still open>"
        finally:
            s.close()
        answers.append((data.split(b"\r\n", 1)[0].decode(errors="replace"), b"<still open>" in data, data))
    took = time.perf_counter() - t0
    assert all(first == "HTTP/1.1 408 Request Timeout" for first, _, _ in answers), answers[:2]
    assert not any(still_open for _, still_open, _ in answers), answers[:2]
    assert all(b'"code":"request_timeout"' in data for *_, data in answers), answers[0]
    assert 1.0 <= took < 6.0, took
    r = httpx.post(f"{live.base}{URL}/recommend", json={"user_id": "u1", "k": 3}, headers={"X-API-Key": READ})
    assert r.status_code == 200, r.text
