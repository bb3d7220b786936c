"""The official `openai` Python SDK as a real client through Envoy + semgate."""

import uuid

import pytest
from openai import OpenAI


@pytest.fixture(scope="module")
def client(envoy):
    return OpenAI(base_url=envoy.url + "/v1", api_key="sk-demo", max_retries=0)


def test_sdk_non_streaming_miss_then_hit(client, provider):
    messages = [{"role": "user", "content": f"SDK question {uuid.uuid4().hex}"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert first.headers["x-semgate-cache"] == "miss"
    started = provider.started()
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert second.headers["x-semgate-cache"] == "hit-exact"
    a, b = first.parse(), second.parse()
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.content.startswith("Answer #")
    assert b.usage.total_tokens == a.usage.total_tokens > 0
    assert provider.started() == started


def test_sdk_streaming_miss_then_hit(client, provider):
    messages = [{"role": "user", "content": f"SDK stream {uuid.uuid4().hex}"}]

    def run():
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True})
        text, usage = [], None
        for chunk in raw.parse():
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
            usage = chunk.usage or usage
        return raw.headers["x-semgate-cache"], "".join(text), usage

    status1, text1, usage1 = run()
    started = provider.started()
    status2, text2, usage2 = run()
    assert (status1, status2) == ("miss", "hit-exact")
    assert text1 == text2 and text1.startswith("Answer #")
    assert usage1 is not None and usage1.total_tokens == usage2.total_tokens
    assert provider.started() == started


def test_sdk_sees_gateway_errors_as_api_errors(client):
    import openai
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert e.value.status_code == 400
    assert e.value.body["param"] == "temperature"
    bad = OpenAI(base_url=client.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
