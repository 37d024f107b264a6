"""Bad input of every kind gets a 4xx with an OpenAI-style error body, never a crash, and the server
keeps answering; authentication on every route but /health."""
import json
import socket

import openai
import pytest

from conftest import API_KEY, MODEL_NAME

COMPLETION = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2, "temperature": 0}
CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def with_fields(base, **fields):
    body = dict(base)
    body.update(fields)
    return body


def assert_error(server, path, body, status, param=None, code=None, **kwargs):
    got, headers, data = server.request("POST", path, body, **kwargs)
    assert got == status, data
    assert headers["Content-Type"] == "application/json"
    error = json.loads(data)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert "type" in error and "param" in error and "code" in error
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.mark.parametrize("body", [b"", b"{", b'{"model": }', b"[1, 2", b"nul", b'{"model": "x"} trailing', b"\x00\x01"])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_malformed_json(server, path, body):
    assert_error(server, path, body, 400, code="invalid_json")


@pytest.mark.parametrize("body", [
    b'{"model": "smollm2", "prompt": "\xff\xfe", "max_tokens": 2}',
    b'{"model": "smollm2", "prompt": "caf\xc3", "max_tokens": 2}',
    b'{"model": "smollm2", "prompt": "\xed\xa0\x80", "max_tokens": 2}',
    b'{"model": "smollm2", "prompt": "\\ud800", "max_tokens": 2}',
])
def test_invalid_utf8(server, body):
    assert_error(server, "/v1/completions", body, 400, code="invalid_json")


@pytest.mark.parametrize("fields,param", [
    ({"model": 7}, "model"),
    ({"prompt": 7}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1, "x"]}, "prompt"),
    ({"prompt": [10 ** 9]}, "prompt"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"temperature": "warm"}, "temperature"),
    ({"stream": "yes"}, "stream"),
    ({"stop": 5}, "stop"),
    ({"seed": "x"}, "seed"),
    ({"top_k": "many"}, "top_k"),
])
def test_wrong_types(server, fields, param):
    assert_error(server, "/v1/completions", with_fields(COMPLETION, **fields), 400, param=param)


@pytest.mark.parametrize("fields,param", [
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user"}, 3]}, "messages[1]"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": {"a": 1}}]}, "messages[0].content"),
])
def test_chat_wrong_types(server, fields, param):
    assert_error(server, "/v1/chat/completions", with_fields(CHAT, **fields), 400, param=param)


def test_unknown_model(server, client):
    assert_error(server, "/v1/completions", with_fields(COMPLETION, model="gpt-4"), 404, param="model",
                 code="model_not_found")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("max_tokens", [-1, 0, 10 ** 7, 2 ** 63, 2 ** 64 - 1, 10 ** 30])
def test_bad_max_tokens(server, max_tokens):
    assert_error(server, "/v1/completions", with_fields(COMPLETION, max_tokens=max_tokens), 400, param="max_tokens")


def test_prompt_longer_than_context(server, client):
    long_prompt = "hello " * 9000  # > 8192 tokens
    assert_error(server, "/v1/completions", with_fields(COMPLETION, prompt=long_prompt), 400,
                 code="context_length_exceeded")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": long_prompt}])
    assert "context length" in str(info.value)
    # Prompt fits, prompt + max_tokens does not.
    assert_error(server, "/v1/completions", with_fields(COMPLETION, prompt="hello " * 4000, max_tokens=5000), 400,
                 param="max_tokens", code="context_length_exceeded")


@pytest.mark.parametrize("fields,param", [
    ({"n": 2}, "n"), ({"best_of": 2}, "best_of"), ({"echo": True}, "echo"), ({"logprobs": 3}, "logprobs"),
    ({"suffix": "x"}, "suffix"), ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"frequency_penalty": -1.0}, "frequency_penalty"), ({"logit_bias": {"5": 10}}, "logit_bias"),
    ({"prompt": ["a", "b"]}, "prompt"), ({"frobnicate": True}, "frobnicate"),
])
def test_unsupported_parameters(server, fields, param):
    assert_error(server, "/v1/completions", with_fields(COMPLETION, **fields), 400, param=param,
                 code="unsupported_parameter")


@pytest.mark.parametrize("fields,param", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]"),
])
def test_chat_unsupported(server, fields, param):
    assert_error(server, "/v1/chat/completions", with_fields(CHAT, **fields), 400, param=param,
                 code="unsupported_parameter")


@pytest.mark.parametrize("fields,param", [
    ({"temperature": -1}, "temperature"), ({"temperature": 3}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"min_p": -0.5}, "min_p"), ({"top_k": -5}, "top_k"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_out_of_range(server, fields, param):
    assert_error(server, "/v1/completions", with_fields(COMPLETION, **fields), 400, param=param)


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL_NAME, prompt="x", max_tokens=-3)
    assert info.value.body["param"] == "max_tokens"


def test_not_found_and_method(server):
    status, headers, body = server.request("GET", "/v1/nothing")
    assert status == 404 and json.loads(body)["error"]["message"]
    status, _, body = server.request("GET", "/v1/completions")
    assert 400 <= status < 500 and json.loads(body)["error"]


def test_body_too_large(server):
    # Headers only: the server answers from Content-Length without reading (or waiting for) the body.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {9 << 20}\r\n\r\n".encode())
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            data = s.recv(65536)
            if not data:
                break
            response += data
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_garbage_on_the_socket(server):
    for payload in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
                    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"model\"",  # truncated body
                    b"\xff" * 1000 + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(65536)
            except OSError:
                pass
    status, _, _ = server.request("GET", "/health", auth=False)
    assert status == 200


@pytest.mark.parametrize("route,method", [
    ("/v1/models", "GET"), ("/metrics", "GET"), ("/v1/completions", "POST"), ("/v1/chat/completions", "POST"),
    ("/v1/models/smollm2", "GET"), ("/v1/unknown", "GET"),
])
def test_auth_required(server, route, method):
    body = COMPLETION if method == "POST" else None
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                    {"Authorization": f"Basic {API_KEY}"}, {"Authorization": f"Bearer {API_KEY}x"}):
        status, response_headers, data = server.request(method, route, body, auth=False, headers=headers)
        assert status == 401, (route, headers)
        assert json.loads(data)["error"]["code"] == "invalid_api_key"


def test_auth_with_openai_client(server):
    bad = openai.OpenAI(base_url=server.base_url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_still_serving_after_bad_input(client):
    r = client.completions.create(model=MODEL_NAME, prompt="Still alive?", max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3
