//! Response body that knows whether it was fully sent.
//!
//! Three shapes: a full buffer, a buffer that is deliberately cut off after a
//! prefix (`x-fake-drop: mid-stream` on a JSON answer), and a channel fed by a
//! producer task (SSE streams). The optional [`Tracker`] counts the response as
//! `completed` when its last byte is handed to hyper, or `aborted` otherwise.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::state::Tracker;

/// What a stream producer sends to its body.
pub enum Msg {
    Data(Bytes),
    /// The final bytes of the body; the response is complete after these.
    Last(Bytes),
    /// Cut the response off here (the client sees a truncated body).
    Abort,
}

/// Error used to make hyper abort a response (it then closes the connection).
#[derive(Debug)]
pub struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response deliberately aborted")
    }
}

impl std::error::Error for Aborted {}

pub struct TrackedBody {
    kind: Kind,
    tracker: Option<Tracker>,
}

enum Kind {
    Full(Option<Bytes>),
    Truncated { head: Option<Bytes>, declared_len: u64, flushed: bool },
    Stream { rx: mpsc::Receiver<Msg>, ended: bool, aborting: bool },
}

impl TrackedBody {
    pub fn full(data: Bytes, tracker: Option<Tracker>) -> TrackedBody {
        let mut body = TrackedBody { kind: Kind::Full(None), tracker };
        if data.is_empty() {
            // hyper never polls an empty body: it is complete right away.
            body.complete();
        } else {
            body.kind = Kind::Full(Some(data));
        }
        body
    }

    /// Declares `data.len()` as content-length but sends only the first half
    /// (at least one byte), then aborts.
    pub fn truncated(data: Bytes, tracker: Option<Tracker>) -> TrackedBody {
        let declared_len = data.len() as u64;
        let cut = (data.len() / 2).max(1).min(data.len());
        TrackedBody { kind: Kind::Truncated { head: Some(data.slice(..cut)), declared_len, flushed: false }, tracker }
    }

    pub fn stream(rx: mpsc::Receiver<Msg>, tracker: Option<Tracker>) -> TrackedBody {
        TrackedBody { kind: Kind::Stream { rx, ended: false, aborting: false }, tracker }
    }

    fn complete(&mut self) {
        if let Some(t) = &mut self.tracker {
            t.complete();
        }
    }
}

fn abort(tracker: &mut Option<Tracker>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
    if let Some(t) = tracker {
        t.abort();
    }
    Poll::Ready(Some(Err(Aborted)))
}

fn complete(tracker: &mut Option<Tracker>) {
    if let Some(t) = tracker {
        t.complete();
    }
}

/// Returns `Pending` once and wakes the task right away. hyper flushes what it
/// has buffered before polling the body again, so data sent before an abort
/// really reaches the client.
fn yield_for_flush(cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let TrackedBody { kind, tracker } = self.get_mut();
        match kind {
            Kind::Full(data) => match data.take() {
                Some(data) => {
                    complete(tracker);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                None => Poll::Ready(None),
            },
            Kind::Truncated { head, flushed, .. } => {
                if let Some(head) = head.take() {
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                if !*flushed {
                    *flushed = true;
                    return yield_for_flush(cx);
                }
                abort(tracker)
            }
            Kind::Stream { rx, ended, aborting } => {
                if *ended {
                    return Poll::Ready(None);
                }
                if *aborting {
                    *ended = true;
                    return abort(tracker);
                }
                match ready!(rx.poll_recv(cx)) {
                    Some(Msg::Data(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some(Msg::Last(data)) => {
                        *ended = true;
                        complete(tracker);
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Some(Msg::Abort) => {
                        *aborting = true;
                        yield_for_flush(cx)
                    }
                    // Producer vanished without finishing: treat as an abort.
                    None => {
                        *ended = true;
                        abort(tracker)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Truncated { .. } => false,
            Kind::Stream { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Truncated { declared_len, .. } => SizeHint::with_exact(*declared_len),
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}
