#!/usr/bin/env python3
"""Serving benchmark: C concurrent streaming chat clients for a fixed time against `tachyon serve`,
for each C given; prints one Markdown row per C (aggregate generated tokens/s, p50/p99 time to first
token and inter-token latency as the clients see them).

Starts its own server unless --url is given:
  .cache/server-e2e-venv/bin/python tests/server_e2e/bench_serving.py --clients 1 8 32 --seconds 60 \
      --bin build/tachyon --model models/SmolLM2-135M-Instruct.Q4_1.gguf -- --max-batch 32 --max-queue 64
Arguments after `--` go to `tachyon serve`. Greedy decoding, ignore_eos, fixed max_tokens: every request
costs the same, so runs are comparable.
"""
import argparse
import os
import re
import subprocess
import sys
import threading
import time

import openai

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


def run(client, model, clients, seconds, max_tokens):
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()
    ttft, gaps, tokens, requests, errors = [], [], [0], [0], []

    def worker(index):
        k = index
        while time.perf_counter() < deadline:
            prompt = PROMPTS[k % len(PROMPTS)]
            k += 1
            start = time.perf_counter()
            times, usage = [], None
            try:
                stream = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                    temperature=0, stream=True, stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True})
                for chunk in stream:
                    if chunk.usage:
                        usage = chunk.usage
                    if chunk.choices and chunk.choices[0].delta.content:
                        times.append(time.perf_counter() - start)
            except Exception as e:  # noqa: BLE001 - report, keep going
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                requests[0] += 1
                tokens[0] += usage.completion_tokens if usage else len(times)
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


def start_server(binary, model, extra):
    command = [binary, "serve", "-m", model, "--port", "0", "--quiet", *extra]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        sys.stderr.write(line)
        match = re.search(r"on (http://[\d.]+:\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, match.group(1)
    raise SystemExit("the server did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (else one is started from --bin/--model)")
    parser.add_argument("--bin", default="build/tachyon")
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--model-name", help="the served model id (default: the first of /v1/models)")
    parser.add_argument("--api-key", default=os.environ.get("TACHYON_API_KEY", "none"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("serve_args", nargs="*", help="after --: arguments for tachyon serve")
    args = parser.parse_args()

    process = None
    url = args.url
    if not url:
        process, url = start_server(args.bin, args.model, args.serve_args)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=args.api_key, max_retries=0, timeout=600)
        model = args.model_name or client.models.list().data[0].id
        print("| clients | requests | generated tokens/s | TTFT p50 | TTFT p99 | inter-token p50 | inter-token p99 |")
        print("|---|---|---|---|---|---|---|")
        for clients in args.clients:
            r = run(client, model, clients, args.seconds, args.max_tokens)
            print(f"| {clients} | {r['requests']} | {r['tok_s']:.1f} | {r['ttft50'] * 1e3:.0f} ms | "
                  f"{r['ttft99'] * 1e3:.0f} ms | {r['itl50'] * 1e3:.1f} ms | {r['itl99'] * 1e3:.1f} ms |", flush=True)
            if r["errors"]:
                print(f"  {len(r['errors'])} errors, first: {r['errors'][0]}", file=sys.stderr)
    finally:
        if process:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
