//! One client's SSE response body: the preamble, then queued frames, with `: ping` keepalives
//! whenever the stream has been quiet for the keepalive interval.
//!
//! The body ends when the hub drops its queue's sender (shutdown, or the client was cut as
//! slow); dropping the body, for whatever reason, unregisters the stream.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::hub::{MemberGuard, Registration};
use super::sse::PING;

pub struct SseBody {
    preamble: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    guard: MemberGuard,
    keepalive_every: Duration,
    keepalive: Pin<Box<Sleep>>,
    last_sent: Instant,
}

impl SseBody {
    pub fn new(registration: Registration, preamble: Bytes, keepalive_every: Duration) -> Self {
        let now = Instant::now();
        Self {
            preamble: Some(preamble),
            rx: registration.rx,
            guard: registration.guard,
            keepalive_every,
            keepalive: Box::pin(tokio::time::sleep_until(now + keepalive_every)),
            last_sent: now,
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(preamble) = this.preamble.take() {
            this.last_sent = Instant::now();
            return Poll::Ready(Some(Ok(Frame::data(preamble))));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => {
                // Remember when, instead of resetting the timer on every frame: a busy stream
                // then costs no timer operations at all.
                this.last_sent = Instant::now();
                this.guard.frame_sent();
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        loop {
            if this.keepalive.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = this.last_sent + this.keepalive_every;
            let now = Instant::now();
            if due <= now {
                this.last_sent = now;
                this.keepalive.as_mut().reset(now + this.keepalive_every);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(PING)))));
            }
            // Something was sent since the timer was set: wait until the stream is quiet for a
            // whole interval (polling again registers the waker for the new deadline).
            this.keepalive.as_mut().reset(due);
        }
    }
}
