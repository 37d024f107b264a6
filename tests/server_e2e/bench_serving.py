#!/usr/bin/env python3
"""Serving benchmark: C concurrent streaming chat clients for a fixed time against `tachyon serve`,
for each C given; prints one Markdown row per C (aggregate generated tokens/s, p50/p99 time to first
token and inter-token latency as the clients see them).

Standard library only (http.client, threads): it runs on GPU hosts without pip or internet.
Starts its own server unless --url is given:
  python3 tests/server_e2e/bench_serving.py --clients 1 8 32 --seconds 20 \
      --bin build/tachyon --model models/SmolLM2-135M-Instruct.Q4_1.gguf -- --max-batch 32 --max-queue 64
Arguments after `--` go to `tachyon serve`. Greedy decoding (--temperature: sampled), ignore_eos, fixed max_tokens: every request
costs the same, so runs are comparable. Each client holds one keep-alive connection; a request's first
content chunk gives its time to first token, the gaps between its content chunks the inter-token latency.
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short poem about autumn leaves.",
    "What are three uses of a paperclip?",
    "Describe how a bicycle works.",
    "Give me a recipe for pancakes.",
    "Summarize the plot of Romeo and Juliet.",
    "Write a Python function that reverses a string.",
    "What is the difference between weather and climate?",
]


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, url, api_key, timeout=600):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
        self.timeout = timeout
        self.connection = None

    def _connection(self):
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.connection

    def get_json(self, path):
        c = self._connection()
        c.request("GET", path, headers=self.headers)
        response = c.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return json.loads(body)

    def stream_chat(self, model, prompt, max_tokens, temperature=0.0):
        """Returns (seconds from start to each content chunk, completion tokens from usage or None)."""
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                           "max_tokens": max_tokens, "temperature": temperature, "stream": True,
                           "stream_options": {"include_usage": True}, "ignore_eos": True})
        start = time.perf_counter()
        try:
            c = self._connection()
            c.request("POST", "/v1/chat/completions", body=body, headers=self.headers)
            response = c.getresponse()
            if response.status != 200:
                raise RuntimeError(f"{response.status} {response.read()[:200]!r}")
            times, usage = [], None
            while True:
                line = response.readline()
                if not line:
                    raise RuntimeError("the stream ended without [DONE]")
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise RuntimeError(f"error event: {event['error']}")
                if event.get("usage"):
                    usage = event["usage"]["completion_tokens"]
                choices = event.get("choices") or []
                if choices and choices[0].get("delta", {}).get("content"):
                    times.append(time.perf_counter() - start)
            response.read()  # the end of the chunked body, so the connection can be reused
            return times, usage
        except Exception:
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            raise


def run(url, api_key, model, clients, seconds, max_tokens, temperature=0.0):
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()
    ttft, gaps, tokens, requests, errors = [], [], [0], [0], []

    def worker(index):
        client = Client(url, api_key)
        k = index
        while time.perf_counter() < deadline:
            prompt = PROMPTS[k % len(PROMPTS)]
            k += 1
            try:
                times, usage = client.stream_chat(model, prompt, max_tokens, temperature)
            except Exception as e:  # noqa: BLE001 - report, keep going
                with lock:
                    errors.append(repr(e))
                time.sleep(0.1)
                continue
            with lock:
                requests[0] += 1
                tokens[0] += usage if usage is not None else len(times)
                if times:
                    ttft.append(times[0])
                    gaps.extend(b - a for a, b in zip(times, times[1:]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "seconds": elapsed, "requests": requests[0], "tokens": tokens[0],
            "tok_s": tokens[0] / elapsed, "ttft50": percentile(ttft, 50), "ttft99": percentile(ttft, 99),
            "itl50": percentile(gaps, 50), "itl99": percentile(gaps, 99), "errors": errors}


def start_server(binary, model, extra, lib_dir=None):
    command = [binary, "serve", "-m", model, "--port", "0", "--quiet", *extra]
    env = dict(os.environ)
    if lib_dir:  # the server's shared libraries only, not this interpreter's (scripts/gpu/pack.sh)
        env["LD_LIBRARY_PATH"] = os.path.abspath(lib_dir) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    for line in process.stderr:
        sys.stderr.write(line)
        match = re.search(r"on (http://[\d.]+:\d+)", line)
        if match:
            threading.Thread(target=lambda: [sys.stderr.write(l) for l in process.stderr if "error" in l.lower()],
                             daemon=True).start()
            return process, match.group(1)
    raise SystemExit(f"the server did not start (exit code {process.wait()})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (else one is started from --bin/--model)")
    parser.add_argument("--bin", default="build/tachyon")
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--lib-dir", help="prepended to the server's LD_LIBRARY_PATH (scripts/gpu/pack.sh's lib/)")
    parser.add_argument("--model-name", help="the served model id (default: the first of /v1/models)")
    parser.add_argument("--api-key", default=os.environ.get("TACHYON_API_KEY", "none"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=60, help="per client count")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (each request its own seed else)")
    parser.add_argument("--label", default="", help="a first column naming the configuration")
    parser.add_argument("--no-header", action="store_true")
    parser.add_argument("serve_args", nargs="*", help="after --: arguments for tachyon serve")
    args = parser.parse_args()

    process = None
    url = args.url
    if not url:
        process, url = start_server(args.bin, args.model, args.serve_args, args.lib_dir)
    failed = False
    try:
        model = args.model_name or Client(url, args.api_key).get_json("/v1/models")["data"][0]["id"]
        Client(url, args.api_key).stream_chat(model, PROMPTS[0], 8)  # warm-up (first-use allocations)
        label = "| " + args.label + " " if args.label else ""
        if not args.no_header:
            print(("| model " if args.label else "") + "| clients | requests | generated tokens/s | TTFT p50 | "
                  "TTFT p99 | inter-token p50 | inter-token p99 | errors |")
            print(("|---" if args.label else "") + "|---|---|---|---|---|---|---|---|")
        for clients in args.clients:
            r = run(url, args.api_key, model, clients, args.seconds, args.max_tokens, args.temperature)
            print(f"{label}| {clients} | {r['requests']} | {r['tok_s']:.1f} | {r['ttft50'] * 1e3:.0f} ms | "
                  f"{r['ttft99'] * 1e3:.0f} ms | {r['itl50'] * 1e3:.1f} ms | {r['itl99'] * 1e3:.1f} ms | "
                  f"{len(r['errors'])} |", flush=True)
            if r["errors"]:
                failed = True
                print(f"  {len(r['errors'])} errors, first: {r['errors'][0]}", file=sys.stderr)
    finally:
        if process:
            process.terminate()
            process.wait(timeout=30)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
