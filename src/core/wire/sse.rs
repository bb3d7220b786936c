//! Incremental Server-Sent Events parsing: bytes arrive in arbitrary pieces, events come out
//! whole, each with its raw framing kept so a replay is byte-for-byte the original stream.

/// One event: its raw bytes (terminating blank line included) and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub raw: Vec<u8>,
    pub data: String,
}

impl SseEvent {
    /// OpenAI ends a completed stream with `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next piece of the stream; returns the events it completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.pending) {
            let raw: Vec<u8> = self.pending.drain(..end).collect();
            events.push(SseEvent { data: data_of(&raw), raw });
        }
        events
    }

    /// Bytes received after the last complete event (a truncated stream leaves some).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }
}

/// Index just past the first blank line (`\n\n`, `\r\n\r\n` or `\r\r`), if the buffer has one.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        let eol = match buf[i] {
            b'\n' => 1,
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            b'\r' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        let next = i + eol;
        let second = match buf.get(next) {
            Some(b'\n') => 1,
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => 2,
            Some(b'\r') if next + 1 < buf.len() => 1,
            Some(b'\r') => return None, // `\r` at the end: wait to see whether `\n` follows
            None if buf[i] == b'\r' && eol == 1 => return None,
            _ => 0,
        };
        if second > 0 {
            return Some(next + second);
        }
        i = next;
    }
    None
}

fn data_of(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut data: Vec<&str> = Vec::new();
    for line in text.split(['\n', '\r']) {
        if let Some(rest) = line.strip_prefix("data:") {
            data.push(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    data.join("\n")
}

/// Frame one `data:` payload the way OpenAI does.
pub fn frame(data: &str) -> Vec<u8> {
    format!("data: {data}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n: comment\ndata: [DONE]\n\n";

    #[test]
    fn whole_stream_parses_into_events_with_raw_framing() {
        let mut p = SseParser::new();
        let ev = p.feed(STREAM.as_bytes());
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].raw, b"data: {\"b\":2}\n\n");
        assert!(ev[2].is_done());
        assert_eq!(ev.iter().flat_map(|e| e.raw.clone()).collect::<Vec<_>>(), STREAM.as_bytes());
        assert!(p.pending().is_empty());
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_events() {
        for stream in [STREAM.to_string(), STREAM.replace('\n', "\r\n")] {
            let whole = SseParser::new().feed(stream.as_bytes());
            let bytes = stream.as_bytes();
            for cut in 0..bytes.len() {
                for cut2 in cut..bytes.len() {
                    let mut p = SseParser::new();
                    let mut ev = p.feed(&bytes[..cut]);
                    ev.extend(p.feed(&bytes[cut..cut2]));
                    ev.extend(p.feed(&bytes[cut2..]));
                    assert_eq!(ev, whole, "cuts at {cut},{cut2}");
                }
            }
        }
    }

    #[test]
    fn multi_line_data_is_joined() {
        let ev = SseParser::new().feed(b"event: x\ndata: a\ndata:b\n\n");
        assert_eq!(ev[0].data, "a\nb");
    }

    #[test]
    fn truncated_stream_leaves_pending_bytes_and_no_done() {
        let mut p = SseParser::new();
        let ev = p.feed(b"data: {\"a\":1}\n\ndata: {\"b\"");
        assert_eq!(ev.len(), 1);
        assert!(!ev.iter().any(SseEvent::is_done));
        assert_eq!(p.pending(), b"data: {\"b\"");
    }

    #[test]
    fn frame_matches_openai() {
        assert_eq!(frame("[DONE]"), b"data: [DONE]\n\n");
    }
}
