"""Any OpenAI SDK works unchanged: point base_url at the gateway and use a gateway key.
The provider key stays in Envoy. Run against `make demo` or `make run`."""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:10000/v1", api_key="sk-demo")
question = [{"role": "user", "content": "Name three uses of an LLM gateway."}]
for attempt in (1, 2):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question)
    answer = raw.parse()
    print(attempt, raw.headers.get("x-semgate-cache"), answer.choices[0].message.content[:60])

# Ask for a fresh answer (not served from cache, but stored): Cache-Control: no-cache.
fresh = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=question, extra_headers={"cache-control": "no-cache"})
print("refresh", fresh.headers.get("x-semgate-cache"))
