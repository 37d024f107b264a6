"""A real `tachyon serve` process on loopback for the end-to-end tests.

Environment: TACHYON_BIN (default build/tachyon), TACHYON_MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf).
Every test is skipped when the model file is absent (scripts/fetch_model.sh fetches it).
"""
import http.client
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / os.environ.get("TACHYON_BIN", "build/tachyon")  # relative paths are from the repository root
MODEL = ROOT / os.environ.get("TACHYON_MODEL", "models/SmolLM2-135M-Instruct.Q4_1.gguf")
MODEL_NAME = "smollm2"
API_KEY = "test-key-123"
LOG_DIR = ROOT / ".cache" / "server-e2e-logs"


class Server:
    """One server process; `port`, `base_url`, `pid` and helpers for raw HTTP."""

    def __init__(self, name, *args):
        if not MODEL.exists():
            pytest.skip(f"{MODEL} not found (run scripts/fetch_model.sh)")
        if not BIN.exists():
            pytest.fail(f"{BIN} not found (build first, or set TACHYON_BIN)")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self.log = open(self.log_path, "w")
        command = [str(BIN), "serve", "-m", str(MODEL), "--host", "127.0.0.1", "--port", "0",
                   "--served-model-name", MODEL_NAME, "--api-key", API_KEY, *args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        errors="replace")
        self.pid = self.process.pid
        self.port = None
        deadline = time.time() + 120
        for line in self.process.stderr:
            self.log.write(line)
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
            if time.time() > deadline:
                break
        if self.port is None:
            self.stop()
            pytest.fail(f"server did not start; see {self.log_path}")
        # Keep draining stderr into the log so that the server never blocks on a full pipe.
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.wait_healthy()

    def _drain(self):
        for line in self.process.stderr:
            self.log.write(line)
            self.log.flush()

    def wait_healthy(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                status, _, _ = self.request("GET", "/health", auth=False)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail("server never became healthy")

    def request(self, method, path, body=None, auth=True, headers=None, timeout=120):
        """Raw HTTP: body may be bytes, str or a JSON-able object. Returns (status, headers, bytes)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        all_headers = {"Content-Type": "application/json"}
        if auth:
            all_headers["Authorization"] = f"Bearer {API_KEY}"
        all_headers.update(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def post_json(self, path, body, **kwargs):
        status, headers, data = self.request("POST", path, body, **kwargs)
        return status, headers, json.loads(data) if data else None

    def metrics(self):
        status, _, data = self.request("GET", "/metrics")
        assert status == 200
        values = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def rss_kib(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.flush()


@pytest.fixture(scope="session")
def server():
    s = Server("main", "--max-batch", "8", "--max-queue", "16", "--threads", "2")
    yield s
    assert s.alive(), f"the server died; see {s.log_path}"
    s.stop()
    assert s.process.returncode == 0, f"exit code {s.process.returncode}; see {s.log_path}"


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
