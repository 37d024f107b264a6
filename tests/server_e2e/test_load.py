"""Bounded load test: N concurrent streaming clients for a fixed time against one server. Every
response must be complete (a finish_reason, then [DONE]), every greedy output must equal the output
of the same request sent alone, and the server's memory must not grow from one round to the next.

TACHYON_LOAD_CLIENTS (default 8) and TACHYON_LOAD_SECONDS (default 25) size it; the summary line
(requests, tokens/s, TTFT and inter-token percentiles) is printed for BENCHMARKS.md.
"""
import os
import statistics
import threading
import time

from conftest import MODEL_NAME

CLIENTS = int(os.environ.get("TACHYON_LOAD_CLIENTS", "8"))
SECONDS = float(os.environ.get("TACHYON_LOAD_SECONDS", "25"))

PROMPTS = [
    ("completion", "The three primary colors are"),
    ("chat", "What is the capital of Italy?"),
    ("completion", "def fibonacci(n):"),
    ("chat", "Write one sentence about the sea."),
]
MAX_TOKENS = [16, 24]


def stream_once(client, kind, prompt, max_tokens):
    """Streams one greedy request; returns (text, finish_reason, token_times, usage)."""
    start = time.perf_counter()
    times, pieces, finish, usage = [], [], None, None
    common = dict(model=MODEL_NAME, max_tokens=max_tokens, temperature=0, stream=True,
                  stream_options={"include_usage": True})
    if kind == "chat":
        stream = client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **common)
    else:
        stream = client.completions.create(prompt=prompt, **common)
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        piece = choice.delta.content if kind == "chat" else choice.text
        if piece:
            pieces.append(piece)
            times.append(time.perf_counter() - start)
        if choice.finish_reason:
            finish = choice.finish_reason
    return "".join(pieces), finish, times, usage


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_round(client, seconds, references, failures):
    """CLIENTS threads stream requests in a loop until `seconds` pass; returns their records."""
    deadline = time.time() + seconds
    records = []
    lock = threading.Lock()

    def worker(index):
        k = index
        while time.time() < deadline:
            case = (PROMPTS[k % len(PROMPTS)], MAX_TOKENS[(k // len(PROMPTS)) % len(MAX_TOKENS)])
            k += 1
            try:
                text, finish, times, usage = stream_once(client, case[0][0], case[0][1], case[1])
            except Exception as e:  # noqa: BLE001 - any failure of a request is a test failure
                with lock:
                    failures.append(f"client {index}: {type(e).__name__}: {e}")
                continue
            with lock:
                records.append((case, text, finish, times, usage))
                if finish not in ("stop", "length") or usage is None:
                    failures.append(f"client {index}: incomplete response {finish!r} {usage!r}")
                elif text != references[case][0]:
                    failures.append(f"client {index}: {case}: {text!r} != alone {references[case][0]!r}")
                elif usage.completion_tokens != references[case][1]:
                    failures.append(f"client {index}: {case}: {usage.completion_tokens} tokens != {references[case][1]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, time.time() - start


def test_concurrent_streaming_load(server, client):
    # References: each case alone, one at a time.
    references = {}
    for prompt in PROMPTS:
        for max_tokens in MAX_TOKENS:
            text, finish, _, usage = stream_once(client, prompt[0], prompt[1], max_tokens)
            assert finish in ("stop", "length")
            references[(prompt, max_tokens)] = (text, usage.completion_tokens)

    failures = []
    run_round(client, min(5.0, SECONDS / 4), references, failures)  # warm-up: thread stacks, caches, arenas
    rss_before = server.rss_kib()
    records, elapsed = run_round(client, SECONDS, references, failures)
    rss_after = server.rss_kib()
    assert not failures, "\n".join(failures[:10])
    assert len(records) >= CLIENTS

    ttft = [r[3][0] for r in records if r[3]]
    gaps = [b - a for r in records for a, b in zip(r[3], r[3][1:])]
    tokens = sum(r[4].completion_tokens for r in records)
    metrics = server.metrics()
    mean_batch = metrics["tachyon_engine_decode_rows_total"] / max(metrics["tachyon_engine_steps_total"], 1)
    print(f"\n[load] {CLIENTS} streaming clients, {elapsed:.1f} s: {len(records)} requests, {tokens} tokens, "
          f"{tokens / elapsed:.1f} tok/s aggregate; TTFT p50 {percentile(ttft, 50) * 1000:.0f} ms "
          f"p99 {percentile(ttft, 99) * 1000:.0f} ms; inter-token p50 {percentile(gaps, 50) * 1000:.0f} ms "
          f"p99 {percentile(gaps, 99) * 1000:.0f} ms; mean decode batch {mean_batch:.2f}; "
          f"RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB")
    # Memory: what one round needs is allocated by the warm-up; a longer round must not add to it.
    assert rss_after <= rss_before * 1.10 + 16 * 1024, (rss_before, rss_after)
    # Continuous batching: requests shared decode steps.
    assert mean_batch > 1.5
    assert statistics.mean(len(r[3]) for r in records) > 1
