"""`tachyon serve --draft` with the committed SmolLM2 drafter: a streamed greedy chat completion equals the
plain server's, /metrics counts the speculative rounds, and --draft with --random-weights is refused. (--draft with
--device cuda runs the GPU round: scripts/gpu/spec.sh tests it on a GPU host.)"""
import subprocess

import openai
import pytest

from conftest import API_KEY, BIN, MODEL, MODEL_NAME, ROOT, Server

DRAFTER = ROOT / "drafters" / "smollm2-135m-instruct-dflash"


@pytest.fixture(scope="module")
def draft_server():
    if not (DRAFTER / "config.json").exists():
        pytest.skip(f"{DRAFTER} not found")
    s = Server("draft", "--draft", str(DRAFTER), "--max-queue", "4", "--threads", "2")
    yield s
    assert s.alive(), f"the draft server died; see {s.log_path}"
    s.stop()
    assert s.process.returncode == 0, f"exit code {s.process.returncode}; see {s.log_path}"


def test_draft_stream_equals_plain_server(client, draft_server):
    draft_client = openai.OpenAI(base_url=draft_server.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    kwargs = dict(model=MODEL_NAME, messages=[{"role": "user", "content": "What is the capital of France?"}],
                  max_tokens=12, temperature=0)
    before = draft_server.metrics()
    plain = client.chat.completions.create(**kwargs)
    chunks = list(draft_client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    after = draft_server.metrics()
    rounds = after["tachyon_speculative_rounds_total"] - before["tachyon_speculative_rounds_total"]
    drafted = after["tachyon_speculative_draft_tokens_total"] - before["tachyon_speculative_draft_tokens_total"]
    accepted = after["tachyon_speculative_accepted_tokens_total"] - before["tachyon_speculative_accepted_tokens_total"]
    assert rounds >= 1 and drafted >= rounds and 0 <= accepted <= drafted
    assert after["tachyon_speculative_tau"] >= 1
    assert after["tachyon_speculative_tokens_per_round_count"] == after["tachyon_speculative_rounds_total"]
    assert after["tachyon_running_sequences"] == 0
    _, _, body = draft_server.request("GET", "/metrics")
    assert b"without --draft" not in body


def test_draft_with_random_weights_is_refused():
    if not MODEL.exists():
        pytest.skip(f"{MODEL} not found")
    done = subprocess.run([str(BIN), "serve", "-m", str(MODEL), "--draft", str(DRAFTER), "--device", "cuda",
                           "--random-weights", "smollm2-135m", "--port", "0"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "--draft" in done.stderr and "--random-weights" in done.stderr
