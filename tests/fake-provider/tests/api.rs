//! End-to-end tests: spawn the built `fake-provider` on an ephemeral port and
//! talk plain HTTP/1.1 to it over `std::net::TcpStream`.
//!
//! No test asserts on timing: ordering is established by what the client has
//! already received (e.g. a held stream) and by the server's own counters.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

// ---------------------------------------------------------------- harness

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra_args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-provider"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fake-provider");
        let stdout = child.stdout.take().expect("child stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("fake-provider listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        assert!(!addr.ends_with(":0"), "real port must be printed: {addr}");
        Server { child, addr }
    }

    fn conn(&self) -> Conn {
        Conn::open(&self.addr)
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut c = self.conn();
        c.send(method, path, headers, body.as_bytes());
        c.read_response().expect("complete response")
    }

    fn chat(&self, headers: &[(&str, &str)], body: &Value) -> Resp {
        self.request("POST", "/v1/chat/completions", headers, &body.to_string())
    }

    fn stats(&self) -> Value {
        self.request("GET", "/stats", &[], "").json()
    }

    fn post(&self, path: &str, body: &str) -> Resp {
        self.request("POST", path, &[], body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Resp {
    head: Head,
    body: Vec<u8>,
}

impl Resp {
    fn status(&self) -> u16 {
        self.head.status
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// One client connection (keep-alive capable) with a tiny HTTP/1.1 reader.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        // A safety net so a bug fails the test instead of hanging it; no
        // test depends on this value.
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("set timeout");
        Conn { reader: BufReader::new(stream) }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(req.as_bytes()).expect("write head");
        stream.write_all(body).expect("write body");
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read_head(&mut self) -> std::io::Result<Head> {
        let status_line = self.read_line()?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').expect("header line");
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        Ok(Head { status, headers })
    }

    /// Next chunk of a chunked body; `None` after the terminating chunk.
    fn read_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let size_line = self.read_line()?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            self.read_line()?; // blank line after the last chunk (no trailers)
            return Ok(None);
        }
        let mut data = vec![0; size];
        self.reader.read_exact(&mut data)?;
        self.read_line()?; // CRLF after the chunk data
        Ok(Some(data))
    }

    /// Reads the body described by `head`; on a broken connection returns
    /// what arrived plus the error.
    fn read_body(&mut self, head: &Head) -> (Vec<u8>, std::io::Result<()>) {
        let mut body = Vec::new();
        if head.header("transfer-encoding") == Some("chunked") {
            loop {
                match self.read_chunk() {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) => return (body, Ok(())),
                    Err(e) => return (body, Err(e)),
                }
            }
        }
        let len: usize = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut buf = [0u8; 4096];
        while body.len() < len {
            match self.reader.read(&mut buf) {
                Ok(0) => return (body, Err(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) => return (body, Err(e)),
            }
        }
        (body, Ok(()))
    }

    fn read_response(&mut self) -> std::io::Result<Resp> {
        let head = self.read_head()?;
        let (body, result) = self.read_body(&head);
        result.map(|()| Resp { head, body })
    }

    /// True when the server closed the connection without sending anything.
    fn closed_without_response(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
        }
    }
}

fn user_chat(text: &str) -> Value {
    json!({ "model": "fake-model", "messages": [{ "role": "user", "content": text }] })
}

fn stream_chat(text: &str, include_usage: bool) -> Value {
    let mut body = user_chat(text);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

/// Splits an SSE body into the payloads of its `data: ` events, checking the framing.
fn sse_events(text: &str) -> Vec<&str> {
    assert!(text.ends_with("\n\n"), "stream must end with a blank line: {text:?}");
    text[..text.len() - 2]
        .split("\n\n")
        .map(|ev| ev.strip_prefix("data: ").unwrap_or_else(|| panic!("bad event {ev:?}")))
        .collect()
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or_else(|| panic!("stats.{key} missing: {stats}"))
}

fn by_status(stats: &Value, status: &str) -> u64 {
    stats["by_status"][status].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------- tests

#[test]
fn chat_json_shape_and_usage() {
    let s = Server::start(&[]);
    let body = json!({
        "model": "gpt-test",
        "messages": [
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": "What is the answer?" }
        ]
    });
    let r = s.chat(&[], &body);
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["id"], "chatcmpl-fake-1");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().is_some());
    assert_eq!(v["model"], "gpt-test");
    let content = "Answer #1 to: What is the answer?";
    assert_eq!(
        v["choices"],
        json!([{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop"
        }])
    );
    // 8 + 19 bytes of message text -> ceil(27 / 4) = 7; 7 words of content.
    assert_eq!(v["usage"], json!({ "prompt_tokens": 7, "completion_tokens": 7, "total_tokens": 14 }));

    // Serial numbers tell a fresh answer from a replayed one.
    let v = s.chat(&[], &body).json();
    assert_eq!(v["id"], "chatcmpl-fake-2");
    assert_eq!(v["choices"][0]["message"]["content"], "Answer #2 to: What is the answer?");
}

#[test]
fn chat_content_parts_images_and_quote_limit() {
    let s = Server::start(&[]);
    let body = json!({
        "model": "m",
        "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "Describe" },
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } },
            { "type": "text", "text": "these" },
            { "type": "image_url", "image_url": { "url": "https://example.invalid/x.png" } }
        ]}]
    });
    let v = s.chat(&[], &body).json();
    assert_eq!(v["choices"][0]["message"]["content"], "Answer #1 to: Describe these [2 image(s)]");
    assert_eq!(v["usage"]["prompt_tokens"], 4); // ceil(13 / 4)

    let long = "é".repeat(300);
    let v = s.chat(&[], &user_chat(&long)).json();
    let expected = format!("Answer #2 to: {}", "é".repeat(200));
    assert_eq!(v["choices"][0]["message"]["content"], expected.as_str());
}

#[test]
fn chat_stream_framing_with_and_without_usage() {
    let s = Server::start(&[]);
    let r = s.chat(&[], &stream_chat("hello stream", true));
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("content-type"), Some("text/event-stream"));
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let events = sse_events(&text);
    // role, 5 words ("Answer #1 to: hello stream"), finish, usage, [DONE]
    assert_eq!(events.len(), 1 + 5 + 1 + 1 + 1, "{text}");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).expect("chunk JSON")).collect();
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-fake-1");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "fake-model");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
    let joined: String = chunks[1..6]
        .iter()
        .map(|c| {
            assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
            c["choices"][0]["delta"]["content"].as_str().expect("content").to_owned()
        })
        .collect();
    assert_eq!(joined, "Answer #1 to: hello stream");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(chunks[7]["usage"], json!({ "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8 }));

    // Without include_usage: no usage chunk, no usage field; x-fake-chunks sets the split.
    let r = s.chat(&[("x-fake-chunks", "3")], &stream_chat("hi", false));
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let events = sse_events(&text);
    assert_eq!(events.len(), 1 + 3 + 1 + 1, "{text}");
    assert!(!text.contains("usage"), "{text}");
    let joined: String = events[1..4]
        .iter()
        .map(|e| {
            let c: Value = serde_json::from_str(e).expect("chunk JSON");
            c["choices"][0]["delta"]["content"].as_str().expect("content").to_owned()
        })
        .collect();
    assert_eq!(joined, "Answer #2 to: hi");

    let stats = s.stats();
    assert_eq!(stat(&stats, "stream_requests"), 2);
    assert_eq!(stat(&stats, "completed"), 2);
}

#[test]
fn forced_status_errors() {
    let s = Server::start(&[]);
    let r = s.chat(&[("x-fake-status", "503")], &user_chat("x"));
    assert_eq!(r.status(), 503);
    let err = &r.json()["error"];
    assert_eq!(err["type"], "server_error");
    assert!(err["message"].is_string() && err.get("code").is_some());

    let r = s.chat(&[("x-fake-status", "429")], &stream_chat("x", false));
    assert_eq!(r.status(), 429);
    assert_eq!(r.head.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded");

    let r = s.chat(&[("x-fake-status", "banana")], &user_chat("x"));
    assert_eq!(r.status(), 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let stats = s.stats();
    assert_eq!(by_status(&stats, "503"), 1);
    assert_eq!(by_status(&stats, "429"), 1);
    assert_eq!(by_status(&stats, "400"), 1);
}

#[test]
fn bad_requests_get_openai_errors() {
    let s = Server::start(&[]);
    let r = s.post("/v1/chat/completions", "{not json");
    assert_eq!(r.status(), 400);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));

    let r = s.post("/v1/chat/completions", r#"{"model":"m"}"#);
    assert_eq!(r.status(), 400);
    assert_eq!(r.json()["error"]["code"], "missing_required_parameter");

    let r = s.post("/v1/chat/completions", r#"{"model":"m","messages":[{"role":"user","content":7}]}"#);
    assert_eq!(r.status(), 400);
}

#[test]
fn require_key() {
    let s = Server::start(&["--require-key", "sekret"]);
    let r = s.chat(&[], &user_chat("x"));
    assert_eq!(r.status(), 401);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(s.chat(&[("Authorization", "Bearer wrong")], &user_chat("x")).status(), 401);
    let r = s.chat(&[("Authorization", "Bearer sekret")], &user_chat("x"));
    assert_eq!(r.status(), 200);
    let stats = s.stats();
    assert_eq!(stat(&stats, "unauthorized"), 2);
    assert_eq!(by_status(&stats, "401"), 2);
    assert_eq!(stats["last_authorization"], "Bearer sekret");
    assert_eq!(stats["last_path"], "/v1/chat/completions");
}

#[test]
fn stats_count_requests_but_not_admin_calls() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    for _ in 0..2 {
        c.send("POST", "/v1/chat/completions", &[], user_chat("x").to_string().as_bytes());
        assert_eq!(c.read_response().expect("response").status(), 200);
    }
    for _ in 0..3 {
        s.stats();
    }
    s.request("GET", "/control", &[], "");
    let stats = s.stats();
    assert_eq!(stat(&stats, "started"), 2);
    assert_eq!(stat(&stats, "completed"), 2);
    assert_eq!(stat(&stats, "aborted"), 0);
    assert_eq!(stat(&stats, "chat_requests"), 2);
    assert_eq!(by_status(&stats, "200"), 2);
    // Connections are counted at accept, admin ones included: the keep-alive
    // one, three /stats, one /control, and this /stats.
    assert_eq!(stat(&stats, "connections"), 6);

    // /reset zeroes counters and serial numbers.
    assert_eq!(s.post("/reset", "").status(), 200);
    let stats = s.stats();
    assert_eq!(stat(&stats, "started"), 0);
    assert_eq!(stat(&stats, "completed"), 0);
    let v = s.chat(&[], &user_chat("again")).json();
    assert_eq!(v["choices"][0]["message"]["content"], "Answer #1 to: again");
}

#[test]
fn held_stream_is_released_by_release_endpoint() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let body = stream_chat("hold me", true).to_string();
    c.send("POST", "/v1/chat/completions", &[("x-fake-hold", "tok1"), ("x-fake-chunks", "2")], body.as_bytes());
    let head = c.read_head().expect("head");
    assert_eq!(head.status, 200);

    // Everything up to the last content chunk arrives while the provider holds.
    let mut text = String::new();
    while text.matches("\n\n").count() < 3 {
        let chunk = c.read_chunk().expect("chunk").expect("stream ended early");
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    assert_eq!(text.matches("\n\n").count(), 3, "{text}");
    assert!(!text.contains("finish_reason\":\"stop") && !text.contains("[DONE]"), "{text}");
    let stats = s.stats();
    assert_eq!(stat(&stats, "started"), 1);
    assert_eq!(stat(&stats, "completed"), 0);

    let released = s.post("/release/tok1", "").json();
    assert_eq!(released["released"], "tok1");
    while let Some(chunk) = c.read_chunk().expect("chunk") {
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    let events = sse_events(&text);
    assert_eq!(events.len(), 1 + 2 + 1 + 1 + 1, "{text}");
    assert!(events[3].contains("\"finish_reason\":\"stop\""));
    assert!(text.ends_with("data: [DONE]\n\n"));
    let stats = s.stats();
    assert_eq!(stat(&stats, "completed"), 1);
    assert_eq!(stat(&stats, "aborted"), 0);
}

#[test]
fn held_json_answer_waits_for_release() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    c.send("POST", "/v1/chat/completions", &[("x-fake-hold", "j")], user_chat("x").to_string().as_bytes());
    // Whether the release lands before or after the request, it is latched.
    assert_eq!(s.post("/release/j", "").status(), 200);
    let r = c.read_response().expect("response");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Answer #1 to: x");
}

#[test]
fn fail_fraction_alternates() {
    let s = Server::start(&[]);
    let r = s.post("/control", r#"{"fail_status":503,"fail_fraction":0.5}"#);
    assert_eq!(r.status(), 200);
    assert_eq!(r.json()["fail_fraction"], 0.5);
    let statuses: Vec<u16> = (0..6).map(|_| s.chat(&[], &user_chat("x")).status()).collect();
    assert_eq!(statuses, [200, 503, 200, 503, 200, 503]);
    let r = s.chat(&[], &user_chat("x"));
    assert_eq!(r.status(), 200);
    assert_eq!(s.chat(&[], &user_chat("x")).json()["error"]["type"], "server_error");

    let stats = s.stats();
    assert_eq!(by_status(&stats, "200"), 4);
    assert_eq!(by_status(&stats, "503"), 4);

    assert_eq!(s.post("/control", r#"{"fail_fraction":0}"#).status(), 200);
    assert!((0..3).all(|_| s.chat(&[], &user_chat("x")).status() == 200));
    assert_eq!(s.post("/control", r#"{"fail_fraction":2}"#).status(), 400);
    assert_eq!(s.post("/control", r#"{"typo":1}"#).status(), 400);
}

#[test]
fn drops() {
    let s = Server::start(&[]);
    // before-headers: connection closed, nothing sent.
    let mut c = s.conn();
    c.send("POST", "/v1/chat/completions", &[("x-fake-drop", "before-headers")], user_chat("x").to_string().as_bytes());
    assert!(c.closed_without_response());

    // mid-stream on a stream: first content chunk arrives, then the stream is cut.
    let mut c = s.conn();
    let body = stream_chat("one two three", false).to_string();
    c.send("POST", "/v1/chat/completions", &[("x-fake-drop", "mid-stream")], body.as_bytes());
    let head = c.read_head().expect("head");
    assert_eq!(head.status, 200);
    let (got, result) = c.read_body(&head);
    assert!(result.is_err(), "stream must be truncated");
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("\"content\":\"Answer\""), "{got}");
    assert!(!got.contains("[DONE]"), "{got}");

    // mid-stream on JSON: content-length promised, fewer bytes delivered.
    let mut c = s.conn();
    c.send("POST", "/v1/chat/completions", &[("x-fake-drop", "mid-stream")], user_chat("x").to_string().as_bytes());
    let head = c.read_head().expect("head");
    let (got, result) = c.read_body(&head);
    assert!(result.is_err());
    let declared: usize = head.header("content-length").and_then(|v| v.parse().ok()).expect("content-length");
    assert!(!got.is_empty() && got.len() < declared);

    let stats = s.stats();
    assert_eq!(stat(&stats, "started"), 3);
    assert_eq!(stat(&stats, "aborted"), 3);
    assert_eq!(stat(&stats, "completed"), 0);
}

#[test]
fn echo_other_paths() {
    let s = Server::start(&[]);
    let r = s.request("GET", "/v1/models?limit=2", &[("X-Custom", "Hello")], "");
    assert_eq!(r.status(), 200);
    let v = r.json();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/v1/models?limit=2");
    assert_eq!(v["headers"]["x-custom"], "Hello");
    assert_eq!(v["body"], "");

    let v = s.request("POST", "/other/echo", &[], "some body").json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/other/echo");
    assert_eq!(v["body"], "some body");
    assert_eq!(v["headers"]["content-length"], "9");

    let stats = s.stats();
    assert_eq!(stat(&stats, "started"), 2);
    assert_eq!(stat(&stats, "completed"), 2);
    assert_eq!(stat(&stats, "chat_requests"), 0);
    assert_eq!(stats["last_path"], "/other/echo");
}

fn embed_request(input: Value) -> String {
    json!({ "model": "text-embedding-3-small", "input": input }).to_string()
}

fn embedding(v: &Value, i: usize) -> Vec<f64> {
    v["data"][i]["embedding"].as_array().expect("embedding").iter().map(|x| x.as_f64().expect("number")).collect()
}

#[test]
fn embeddings_shape_usage_and_determinism() {
    let s = Server::start(&[]);
    let r = s.post("/v1/embeddings", &embed_request(json!(["How do I reset my password?", "Shipping to Norway"])));
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    // 27 + 18 bytes of input -> ceil(45 / 4) = 12.
    assert_eq!(v["usage"], json!({ "prompt_tokens": 12, "total_tokens": 12 }));
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!((v["data"][0]["index"].as_u64(), v["data"][1]["index"].as_u64()), (Some(0), Some(1)));
    let (a, b) = (embedding(&v, 0), embedding(&v, 1));
    assert_eq!(a.len(), 64, "the default dimension");
    assert!((a.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-5, "unit length, as OpenAI's");

    // The same text, alone and as a plain string, gets the same vector; `dimensions` sets the size.
    let again = s.post("/v1/embeddings", &embed_request(json!("How do I reset my password?"))).json();
    assert_eq!(embedding(&again, 0), a);
    let body = json!({ "model": "m", "input": "Shipping to Norway", "dimensions": 256 }).to_string();
    assert_eq!(embedding(&s.post("/v1/embeddings", &body).json(), 0).len(), 256);
    assert_ne!(a, b);

    let stats = s.stats();
    assert_eq!(stat(&stats, "embedding_requests"), 3);
    assert_eq!(stat(&stats, "embedding_inputs"), 4);
    assert_eq!(stat(&stats, "chat_requests"), 0);
    assert_eq!(stat(&stats, "completed"), 3);
    assert_eq!(stats["last_path"], "/v1/embeddings");
}

#[test]
fn embeddings_errors_key_and_injection() {
    let s = Server::start(&["--require-key", "sekret"]);
    let body = embed_request(json!("hello"));
    let r = s.request("POST", "/v1/embeddings", &[], &body);
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let auth = ("Authorization", "Bearer sekret");
    assert_eq!(s.request("POST", "/v1/embeddings", &[auth], &body).status(), 200);

    let r = s.request("POST", "/v1/embeddings", &[auth, ("x-fake-status", "503")], &body);
    assert_eq!(r.status(), 503);
    assert_eq!(r.json()["error"]["type"], "server_error");

    let r = s.request("POST", "/v1/embeddings", &[auth], r#"{"model":"m","input":"x","dimensions":0}"#);
    assert_eq!(r.status(), 400);
    assert_eq!(r.json()["error"]["param"], "dimensions");

    // /control fails embeddings requests too.
    assert_eq!(s.post("/control", r#"{"fail_status":500,"fail_fraction":1}"#).status(), 200);
    assert_eq!(s.request("POST", "/v1/embeddings", &[auth], &body).status(), 500);

    let stats = s.stats();
    assert_eq!(stat(&stats, "embedding_requests"), 5);
    assert_eq!(stat(&stats, "embedding_inputs"), 1, "only the one 200 answer embedded anything");
    assert_eq!(stat(&stats, "unauthorized"), 1);
    assert_eq!((by_status(&stats, "503"), by_status(&stats, "500"), by_status(&stats, "400")), (1, 1, 1));
}

// ---------------------------------------------------------------- Anthropic Messages

const ANTHROPIC_HEADERS: [(&str, &str); 2] = [("x-api-key", "sekret"), ("anthropic-version", "2023-06-01")];

fn anthropic_body(text: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 64,
        "system": "be brief",
        "messages": [{ "role": "user", "content": text }],
        "stream": stream
    })
}

/// Splits an SSE body into (event name, JSON data) pairs, checking the `event:`/`data:` framing.
fn named_events(text: &str) -> Vec<(String, Value)> {
    assert!(text.ends_with("\n\n"), "stream must end with a blank line: {text:?}");
    text[..text.len() - 2]
        .split("\n\n")
        .map(|ev| {
            let (name, data) = ev.split_once('\n').unwrap_or_else(|| panic!("bad event {ev:?}"));
            let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("bad event {ev:?}"));
            let data = data.strip_prefix("data: ").unwrap_or_else(|| panic!("bad event {ev:?}"));
            (name.to_owned(), serde_json::from_str(data).expect("event JSON"))
        })
        .collect()
}

#[test]
fn anthropic_json_shape_and_usage() {
    let s = Server::start(&[]);
    let r = s.request("POST", "/v1/messages", &[], &anthropic_body("What is the answer?", false).to_string());
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("x-fake-serial"), Some("1"));
    let v = r.json();
    assert_eq!(v["id"], "msg_fake_1");
    assert_eq!((&v["type"], &v["role"], &v["model"]), (&json!("message"), &json!("assistant"), &json!("claude-test")));
    assert_eq!(v["content"], json!([{ "type": "text", "text": "Answer #1 to: What is the answer?" }]));
    assert_eq!(v["stop_reason"], "end_turn");
    // The same text as the OpenAI shape's test: 8 + 19 bytes -> 7 tokens; 7 words.
    assert_eq!(v["usage"], json!({ "input_tokens": 7, "output_tokens": 7 }));

    // Image blocks count, tool results are prompt but not quoted.
    let body = json!({ "model": "m", "max_tokens": 5, "messages": [
        { "role": "user", "content": "weather?" },
        { "role": "assistant", "content": [{ "type": "tool_use", "id": "t1", "name": "w", "input": {} }] },
        { "role": "user", "content": [
            { "type": "tool_result", "tool_use_id": "t1", "content": "sunny" },
            { "type": "text", "text": "and this" },
            { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "AA" } }
        ]}
    ]});
    let v = s.request("POST", "/v1/messages", &[], &body.to_string()).json();
    assert_eq!(v["content"][0]["text"], "Answer #2 to: and this [1 image(s)]");
    let stats = s.stats();
    assert_eq!(stat(&stats, "anthropic_requests"), 2);
    assert_eq!(stat(&stats, "chat_requests"), 0);
    assert_eq!(stat(&stats, "completed"), 2);
}

#[test]
fn anthropic_stream_events() {
    let s = Server::start(&[]);
    let r = s.request("POST", "/v1/messages", &[], &anthropic_body("hello stream", true).to_string());
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("content-type"), Some("text/event-stream"));
    let events = named_events(&r.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]); // "Answer #1 to: hello stream"
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "the data repeats the event name");
    }
    let start = &events[0].1["message"];
    assert_eq!((&start["id"], &start["model"]), (&json!("msg_fake_1"), &json!("claude-test")));
    assert_eq!(start["usage"]["input_tokens"], 5); // ceil((8 + 12) / 4)
    let text: String = events[3..8].iter().map(|(_, d)| d["delta"]["text"].as_str().expect("text_delta")).collect();
    assert_eq!(text, "Answer #1 to: hello stream");
    assert_eq!(events[9].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[9].1["usage"]["output_tokens"], 5);

    // Mid-stream drop: the start and the first delta arrive, then the stream is cut.
    let mut c = s.conn();
    c.send(
        "POST",
        "/v1/messages",
        &[("x-fake-drop", "mid-stream")],
        anthropic_body("a b c", true).to_string().as_bytes(),
    );
    let head = c.read_head().expect("head");
    let (got, result) = c.read_body(&head);
    assert!(result.is_err(), "stream must be truncated");
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("\"text\":\"Answer\"") && !got.contains("message_stop"), "{got}");

    let stats = s.stats();
    assert_eq!(stat(&stats, "stream_requests"), 2);
    assert_eq!((stat(&stats, "completed"), stat(&stats, "aborted")), (1, 1));
}

#[test]
fn anthropic_validation_and_keys() {
    let s = Server::start(&["--require-key", "sekret"]);
    let post = |headers: &[(&str, &str)], body: &Value| s.request("POST", "/v1/messages", headers, &body.to_string());
    let good = anthropic_body("x", false);

    // Credentials: x-api-key (a Bearer header is not Anthropic's), then anthropic-version.
    let r = post(&[("Authorization", "Bearer sekret")], &good);
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json(),
        json!({ "type": "error", "error": { "type": "authentication_error", "message": "invalid x-api-key" } })
    );
    let r = post(&[("x-api-key", "sekret")], &good);
    assert_eq!(r.status(), 400);
    assert_eq!(r.json()["error"]["message"], "anthropic-version: header is required");
    assert_eq!(post(&ANTHROPIC_HEADERS, &good).status(), 200);

    let error_of = |body: Value| {
        let r = post(&ANTHROPIC_HEADERS, &body);
        assert_eq!(r.status(), 400, "{body}");
        let v = r.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        v["error"]["message"].as_str().expect("message").to_owned()
    };
    let mut no_max = good.clone();
    no_max.as_object_mut().expect("object").remove("max_tokens");
    assert_eq!(error_of(no_max), "max_tokens: Field required");
    let assistant_first =
        json!({ "model": "m", "max_tokens": 5, "messages": [{ "role": "assistant", "content": "x" }] });
    assert!(error_of(assistant_first).contains("first message must use the \"user\" role"));
    let repeated = json!({ "model": "m", "max_tokens": 5, "messages": [
        { "role": "user", "content": "x" }, { "role": "user", "content": "y" }] });
    assert!(error_of(repeated).contains("roles must alternate"));
    assert!(error_of(json!({ "model": "m", "max_tokens": 5, "messages": [] })).contains("at least one message"));

    // Injected failures come in Anthropic's error shape.
    let r = s.request(
        "POST",
        "/v1/messages",
        &[ANTHROPIC_HEADERS[0], ANTHROPIC_HEADERS[1], ("x-fake-status", "529")],
        &good.to_string(),
    );
    assert_eq!(r.status(), 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    assert_eq!(s.post("/control", r#"{"fail_status":429,"fail_fraction":1}"#).status(), 200);
    let r = post(&ANTHROPIC_HEADERS, &anthropic_body("x", true));
    assert_eq!(r.status(), 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");

    let stats = s.stats();
    assert_eq!(stat(&stats, "anthropic_requests"), 9);
    assert_eq!(stat(&stats, "unauthorized"), 1);
    assert_eq!((by_status(&stats, "200"), by_status(&stats, "400")), (1, 5));
    assert_eq!(stats["last_path"], "/v1/messages");
}

// ---------------------------------------------------------------- Gemini / Vertex

const GEMINI_JSON: &str = "/v1beta/models/gemini-test:generateContent";
const GEMINI_SSE: &str = "/v1beta/models/gemini-test:streamGenerateContent?alt=sse";
const VERTEX_JSON: &str = "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-test:generateContent";
const VERTEX_SSE: &str =
    "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-test:streamGenerateContent?alt=sse";

fn gemini_body(text: &str) -> String {
    json!({
        "systemInstruction": { "parts": [{ "text": "be brief" }] },
        "contents": [{ "role": "user", "parts": [{ "text": text }] }]
    })
    .to_string()
}

#[test]
fn gemini_and_vertex_json_shape_and_usage() {
    let s = Server::start(&[]);
    for (n, path) in [(1, GEMINI_JSON), (2, VERTEX_JSON)] {
        let r = s.request("POST", path, &[], &gemini_body("What is the answer?"));
        assert_eq!(r.status(), 200, "{path}");
        let v = r.json();
        let text = format!("Answer #{n} to: What is the answer?");
        assert_eq!(
            v["candidates"],
            json!([{ "content": { "parts": [{ "text": text }], "role": "model" }, "finishReason": "STOP", "index": 0 }])
        );
        assert_eq!(
            v["usageMetadata"],
            json!({ "promptTokenCount": 7, "candidatesTokenCount": 7, "totalTokenCount": 14 })
        );
        assert_eq!(v["modelVersion"], "gemini-test");
        assert_eq!(v["responseId"], format!("fake-{n}"));
    }
    // Images in either spelling count; a turn of function responses is not the user's words.
    let body = json!({ "contents": [
        { "role": "user", "parts": [{ "text": "describe" }, { "inlineData": { "mimeType": "image/png", "data": "AA" } },
            { "file_data": { "mime_type": "image/jpeg", "file_uri": "https://example.com/a.jpg" } }] },
        { "role": "model", "parts": [{ "functionCall": { "name": "f", "args": {} } }] },
        { "role": "user", "parts": [{ "functionResponse": { "name": "f", "response": {} } }] }
    ]});
    let v = s.request("POST", GEMINI_JSON, &[], &body.to_string()).json();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Answer #3 to: describe [2 image(s)]");
    let stats = s.stats();
    assert_eq!(stat(&stats, "gemini_requests"), 3);
    assert_eq!(stat(&stats, "completed"), 3);
    assert_eq!(stats["last_path"], GEMINI_JSON);
}

#[test]
fn gemini_and_vertex_stream_events() {
    let s = Server::start(&[]);
    for (n, path) in [(1, GEMINI_SSE), (2, VERTEX_SSE)] {
        let r = s.request("POST", path, &[("x-fake-chunks", "3")], &gemini_body("hi"));
        assert_eq!(r.status(), 200);
        assert_eq!(r.head.header("content-type"), Some("text/event-stream"));
        let text = r.text();
        assert!(text.ends_with("\r\n\r\n"), "Google frames events with CRLF: {text:?}");
        let events: Vec<Value> = text[..text.len() - 4]
            .split("\r\n\r\n")
            .map(|ev| serde_json::from_str(ev.strip_prefix("data: ").expect("data event")).expect("event JSON"))
            .collect();
        assert_eq!(events.len(), 3 + 1, "{text}");
        let joined: String = events
            .iter()
            .map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str().expect("text").to_owned())
            .collect();
        assert_eq!(joined, format!("Answer #{n} to: hi"));
        assert!(events[..3].iter().all(|e| e["candidates"][0].get("finishReason").is_none()));
        let last = &events[3];
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            last["usageMetadata"],
            json!({ "promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7 })
        );
        assert_eq!(last["responseId"], format!("fake-{n}"));
    }
    // Without alt=sse the real API streams a JSON array; the fake speaks only SSE.
    let r = s.request("POST", "/v1beta/models/g:streamGenerateContent", &[], &gemini_body("x"));
    assert_eq!(r.status(), 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    let stats = s.stats();
    assert_eq!(stat(&stats, "stream_requests"), 2);
    assert_eq!(stat(&stats, "gemini_requests"), 3);
}

#[test]
fn gemini_validation_keys_and_injection() {
    let s = Server::start(&["--require-key", "sekret"]);
    let key = ("x-goog-api-key", "sekret");
    let r = s.request("POST", GEMINI_JSON, &[], &gemini_body("x"));
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(s.request("POST", GEMINI_JSON, &[("x-goog-api-key", "wrong")], &gemini_body("x")).status(), 401);
    assert_eq!(s.request("POST", GEMINI_JSON, &[key], &gemini_body("x")).status(), 200);
    assert_eq!(s.request("POST", VERTEX_JSON, &[("Authorization", "Bearer sekret")], &gemini_body("x")).status(), 200);

    let error_of = |body: Value| {
        let r = s.request("POST", VERTEX_JSON, &[key], &body.to_string());
        assert_eq!(r.status(), 400, "{body}");
        let v = r.json();
        assert_eq!((&v["error"]["code"], &v["error"]["status"]), (&json!(400), &json!("INVALID_ARGUMENT")));
        v["error"]["message"].as_str().expect("message").to_owned()
    };
    assert!(error_of(json!({ "contents": [] })).contains("contents is not specified"));
    assert!(error_of(json!({})).contains("contents is not specified"));
    let empty_parts =
        json!({ "contents": [{ "role": "user", "parts": [{ "text": "a" }] }, { "role": "model", "parts": [] }] });
    assert!(error_of(empty_parts).contains("contents[1].parts: contents.parts must not be empty"));

    let r = s.request("POST", GEMINI_SSE, &[key, ("x-fake-status", "503")], &gemini_body("x"));
    assert_eq!(r.status(), 503);
    assert_eq!(r.head.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
    assert_eq!(s.post("/control", r#"{"fail_status":500,"fail_fraction":0.5}"#).status(), 200);
    let statuses: Vec<u16> =
        (0..4).map(|_| s.request("POST", GEMINI_JSON, &[key], &gemini_body("x")).status()).collect();
    assert_eq!(statuses, [200, 500, 200, 500]);

    let stats = s.stats();
    assert_eq!(stat(&stats, "gemini_requests"), 12);
    assert_eq!(stat(&stats, "unauthorized"), 2);
    assert_eq!(by_status(&stats, "500"), 2);
}
