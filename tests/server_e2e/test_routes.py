"""Every route through the official openai client and curl: non-streaming and streaming, usage,
stop strings, max_tokens, sampling parameters, /v1/models, /health, /metrics."""
import json
import subprocess

import openai
import pytest

from conftest import API_KEY, MODEL_NAME

GREEDY = {"temperature": 0}


def test_health_needs_no_key(server):
    status, _, body = server.request("GET", "/health", auth=False)
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_completion(client):
    r = client.completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=8, **GREEDY)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    choice = r.choices[0]
    assert choice.finish_reason == "length"
    assert len(choice.text) > 0
    assert r.usage.completion_tokens == 8
    assert r.usage.prompt_tokens == 5
    assert r.usage.total_tokens == 13


def test_completion_stream_equals_non_stream(client):
    kwargs = dict(model=MODEL_NAME, prompt="Once upon a time", max_tokens=12, **GREEDY)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=16, **GREEDY)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 10  # the template's system prompt and turn markers


def test_chat_stream_equals_non_stream(client):
    kwargs = dict(model=MODEL_NAME, messages=[{"role": "system", "content": "You are terse."},
                                              {"role": "user", "content": "Name a color."}],
                  max_tokens=20, **GREEDY)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat_content_parts(client):
    a = client.chat.completions.create(model=MODEL_NAME, max_tokens=6, **GREEDY,
                                       messages=[{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}])
    b = client.chat.completions.create(model=MODEL_NAME, max_tokens=6, **GREEDY,
                                       messages=[{"role": "user", "content": "Hi there"}])
    assert a.choices[0].message.content == b.choices[0].message.content


def test_stop_string(client):
    base = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3, 4,", max_tokens=12, **GREEDY)
    text = base.choices[0].text
    assert len(text) > 4
    stop = text[3:5]
    cut = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3, 4,", max_tokens=12, stop=[stop], **GREEDY)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    streamed = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3, 4,", max_tokens=12, stop=stop,
                                         stream=True, **GREEDY)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_token_id_prompt_equals_text_prompt(client):
    text = client.completions.create(model=MODEL_NAME, prompt="Hello world", max_tokens=5, **GREEDY)
    # SmolLM2's tokenizer adds no BOS: "Hello world" is [19556, 905].
    ids = client.completions.create(model=MODEL_NAME, prompt=[19556, 905], max_tokens=5, **GREEDY)
    assert ids.choices[0].text == text.choices[0].text
    assert ids.usage.prompt_tokens == 2


def test_seeded_sampling_repeats(client):
    kwargs = dict(model=MODEL_NAME, prompt="My favourite food is", max_tokens=10, temperature=1.0, top_p=0.9,
                  extra_body={"top_k": 40, "min_p": 0.05})
    a = client.completions.create(seed=1234, **kwargs).choices[0].text
    b = client.completions.create(seed=1234, **kwargs).choices[0].text
    assert a == b
    others = {client.completions.create(seed=s, **kwargs).choices[0].text for s in range(5)}
    assert len(others) > 1


def test_max_tokens_one(client):
    r = client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=1, **GREEDY)
    assert r.usage.completion_tokens == 1
    assert r.choices[0].finish_reason in ("length", "stop")


def curl(server, *args):
    result = subprocess.run(["curl", "-sS", "-N", "--max-time", "60", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_curl_sse_format(server):
    body = json.dumps({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 4, "temperature": 0, "stream": True})
    out = curl(server, "-H", f"Authorization: Bearer {API_KEY}", "-H", "Content-Type: application/json",
               "-d", body, server.base_url + "/v1/completions")
    events = [e for e in out.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), out
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "text_completion" for c in chunks)


def test_curl_chat_and_headers(server):
    body = json.dumps({"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                       "temperature": 0, "stream": True})
    out = curl(server, "-i", "-H", f"Authorization: Bearer {API_KEY}", "-d", body, server.base_url + "/v1/chat/completions")
    head, _, _ = out.partition("\r\n\r\n")
    assert "content-type: text/event-stream" in head.lower()
    assert out.rstrip().endswith("data: [DONE]")
    plain = json.loads(curl(server, "-H", f"Authorization: Bearer {API_KEY}", "-d", body.replace('"stream": true', '"stream": false'),
                            server.base_url + "/v1/chat/completions"))
    assert plain["object"] == "chat.completion"


def test_metrics(server, client):
    before = server.metrics()
    client.completions.create(model=MODEL_NAME, prompt="Count: 1, 2,", max_tokens=4, **GREEDY)
    after = server.metrics()
    assert after['tachyon_http_responses_total{route="/v1/completions",code="200"}'] >= \
        before.get('tachyon_http_responses_total{route="/v1/completions",code="200"}', 0) + 1
    assert after["tachyon_generation_tokens_total"] >= before["tachyon_generation_tokens_total"] + 4
    assert after["tachyon_prompt_tokens_total"] > before["tachyon_prompt_tokens_total"]
    assert after["tachyon_time_to_first_token_seconds_count"] > before["tachyon_time_to_first_token_seconds_count"]
    assert after["tachyon_inter_token_latency_seconds_count"] >= before["tachyon_inter_token_latency_seconds_count"] + 3
    for name in ("tachyon_queue_depth", "tachyon_running_sequences", "tachyon_speculative_accepted_tokens_total"):
        assert name in after
    _, headers, body = server.request("GET", "/metrics")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"without --draft" in body  # the speculative counters say why they are 0
