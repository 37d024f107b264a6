"""Cancellation when a client disconnects, the bounded queue (429 + Retry-After), per-request
timeouts, and requests unaffected by their neighbours' failures."""
import json
import socket
import threading
import time

import pytest

from conftest import API_KEY, MODEL_NAME, Server

LONG = {"model": MODEL_NAME, "prompt": "Write a very long story about a dragon.", "max_tokens": 4000,
        "temperature": 0, "ignore_eos": True}


def wait_for(predicate, timeout=15.0, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def raw_post(port, path, body):
    """Sends a request on a raw socket and returns the socket (the caller reads or just closes it)."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def idle(server):
    m = server.metrics()
    return m["tachyon_running_sequences"] == 0 and m["tachyon_queue_depth"] == 0


def cancelled(server):
    return server.metrics()['tachyon_requests_finished_total{reason="cancelled"}']


def test_stream_disconnect_cancels(server, client):
    assert wait_for(lambda: idle(server))
    before = cancelled(server)
    stream = client.completions.create(stream=True, **{k: v for k, v in LONG.items() if k != "ignore_eos"},
                                       extra_body={"ignore_eos": True})
    received = 0
    for chunk in stream:
        received += 1
        if received == 5:
            break
    stream.close()
    assert wait_for(lambda: cancelled(server) == before + 1), "the engine did not cancel the request"
    assert wait_for(lambda: idle(server))
    rows = server.metrics()["tachyon_engine_decode_rows_total"]
    time.sleep(0.5)
    assert server.metrics()["tachyon_engine_decode_rows_total"] == rows  # nothing is decoding for nobody


def test_non_stream_disconnect_cancels(server):
    assert wait_for(lambda: idle(server))
    before = cancelled(server)
    s = raw_post(server.port, "/v1/completions", LONG)
    assert wait_for(lambda: server.metrics()["tachyon_running_sequences"] == 1)
    s.close()
    assert wait_for(lambda: cancelled(server) == before + 1), "the engine did not cancel the request"
    assert wait_for(lambda: idle(server))


def test_disconnect_while_queued_and_others_unaffected(server, client):
    # Fill the batch of 8 with long streams, queue a few more, drop everything; a request after
    # that runs normally.
    sockets = [raw_post(server.port, "/v1/completions", dict(LONG, stream=True)) for _ in range(11)]
    assert wait_for(lambda: server.metrics()["tachyon_queue_depth"] == 3)
    for s in sockets:
        s.close()
    assert wait_for(lambda: idle(server), timeout=30)
    r = client.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3


def test_request_timeout_extension(server):
    status, _, data = server.post_json("/v1/completions", dict(LONG, timeout=0.5))
    assert status == 408
    assert data["error"]["code"] == "timeout"
    # Streaming: the 200 is already out, so the timeout arrives as an error event before [DONE].
    s = raw_post(server.port, "/v1/completions", dict(LONG, timeout=0.5, stream=True))
    response = b""
    while b"data: [DONE]" not in response:
        data = s.recv(65536)
        if not data:
            break
        response += data
    s.close()
    assert b'"code":"timeout"' in response
    assert b"data: [DONE]" in response
    assert wait_for(lambda: idle(server))


@pytest.fixture(scope="module")
def small_server():
    s = Server("small", "--max-batch", "1", "--max-queue", "1", "--request-timeout", "3", "--threads", "2")
    yield s
    assert s.alive()
    s.stop()
    assert s.process.returncode == 0


def test_full_queue_answers_429(small_server):
    held = [raw_post(small_server.port, "/v1/completions", dict(LONG, stream=True)) for _ in range(2)]
    assert wait_for(lambda: small_server.metrics()["tachyon_queue_depth"] == 1)
    statuses = []
    for _ in range(3):
        status, headers, data = small_server.post_json("/v1/completions", dict(LONG, max_tokens=2))
        statuses.append(status)
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert data["error"]["code"] == "rate_limit_exceeded"
    assert small_server.metrics()['tachyon_requests_rejected_total{reason="queue_full"}'] == 3
    for s in held:
        s.close()
    assert wait_for(lambda: idle(small_server), timeout=30)
    status, _, data = small_server.post_json("/v1/completions", dict(LONG, max_tokens=2))
    assert status == 200 and data["usage"]["completion_tokens"] == 2


def test_server_timeout_option(small_server):
    start = time.time()
    status, _, data = small_server.post_json("/v1/completions", LONG)
    assert status == 408, data
    assert 2.5 < time.time() - start < 10
    # A queued request's clock runs while it waits, too.
    results = []

    def post():
        results.append(small_server.post_json("/v1/completions", LONG)[0])

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [408, 408]
    assert wait_for(lambda: idle(small_server))
