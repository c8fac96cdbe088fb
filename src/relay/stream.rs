//! One client's SSE response body: the preamble, then (when resuming) the backlog from the log,
//! then live frames, with `: ping` keepalives whenever the stream has been quiet for the
//! keepalive interval. Live frames whose id the backlog already sent are skipped.
//!
//! The body ends when the hub lets the stream go (shutdown, or the client was cut as
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

use super::client_ip::IpSlot;
use super::hub::{FrameReceiver, MemberGuard, Registration};
use super::log::StreamId;
use super::replay::ReplayItem;
use super::sse::{PING, expired_frame};

pub struct SseBody {
    preamble: Option<Bytes>,
    /// The backlog being replayed; `None` once it is sent (or when not resuming).
    replay: Option<mpsc::Receiver<ReplayItem>>,
    /// The newest id the client has (its resume point, then the backlog): live frames up to it
    /// are duplicates.
    replayed_through: Option<StreamId>,
    rx: FrameReceiver,
    guard: MemberGuard,
    keepalive_every: Duration,
    keepalive: Pin<Box<Sleep>>,
    last_sent: Instant,
    /// When the stream's token expires: then `relay.expired` is sent and the stream ends.
    expiry: Option<Pin<Box<Sleep>>>,
    expired: bool,
    /// The client IP's stream slot, returned when the stream ends.
    _ip_slot: Option<IpSlot>,
}

impl SseBody {
    pub fn new(
        registration: Registration,
        preamble: Bytes,
        replay: Option<mpsc::Receiver<ReplayItem>>,
        keepalive_every: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            preamble: Some(preamble),
            replay,
            replayed_through: None,
            rx: registration.rx,
            guard: registration.guard,
            keepalive_every,
            keepalive: Box::pin(tokio::time::sleep_until(now + keepalive_every)),
            last_sent: now,
            expiry: None,
            expired: false,
            _ip_slot: None,
        }
    }

    /// Keeps the client IP's slot for the life of the stream.
    pub fn holding(mut self, slot: Option<IpSlot>) -> Self {
        self._ip_slot = slot;
        self
    }

    /// Ends the stream at `expires_at` (unix seconds), the expiry of its token.
    pub fn expiring_at(mut self, expires_at: Option<i64>) -> Self {
        if let Some(expires_at) = expires_at {
            let left = (expires_at - chrono::Utc::now().timestamp()).max(0) as u64;
            self.expiry = Some(Box::pin(tokio::time::sleep(Duration::from_secs(left))));
        }
        self
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
        if this.expired {
            return Poll::Ready(None);
        }
        if let Some(expiry) = this.expiry.as_mut()
            && expiry.as_mut().poll(cx).is_ready()
        {
            // Tell the client why, so that it fetches a fresh token before reconnecting.
            this.expired = true;
            return Poll::Ready(Some(Ok(Frame::data(expired_frame()))));
        }
        if let Some(preamble) = this.preamble.take() {
            this.last_sent = Instant::now();
            return Poll::Ready(Some(Ok(Frame::data(preamble))));
        }
        while let Some(replay) = this.replay.as_mut() {
            match replay.poll_recv(cx) {
                Poll::Ready(Some(ReplayItem::SeenThrough(id))) => this.replayed_through = Some(id),
                Poll::Ready(Some(ReplayItem::Frame(frame))) => {
                    if frame.id.is_some() {
                        this.replayed_through = frame.id;
                    }
                    return Poll::Ready(Some(Ok(this.sent(frame.bytes.clone()))));
                }
                // Backlog sent: go live.
                Poll::Ready(None) => this.replay = None,
                Poll::Pending => return this.poll_keepalive(cx),
            }
        }
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(frame)) => {
                    if frame.id.is_some() && frame.id <= this.replayed_through {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(this.sent(frame.bytes.clone()))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return this.poll_keepalive(cx),
            }
        }
    }
}

impl SseBody {
    fn sent(&mut self, bytes: Bytes) -> Frame<Bytes> {
        // Remember when, instead of resetting the timer on every frame: a busy stream then
        // costs no timer operations at all.
        self.last_sent = Instant::now();
        self.guard.frame_sent();
        Frame::data(bytes)
    }

    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self;
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
