//! One client's SSE response body: the preamble, then (when resuming) the backlog from the log,
//! then live frames, with the `: ping` keepalives the hub asks for when the stream has been
//! quiet. Live frames whose id the backlog already sent are skipped.
//!
//! A resuming stream keeps the client's position (per log partition, the last entry it has)
//! until its frames' own positions cover it. With several partitions a frame's `id:` states
//! the relay's position when it delivered the frame; a client resumed from a position ahead of
//! it in some partition (it came from a pod that had read further) gets the greater of the two,
//! so that its next resume does not replay what it already has.
//!
//! The body ends when the hub lets the stream go (shutdown, or the client was cut as
//! slow); dropping the body, for whatever reason, unregisters the stream.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::client_ip::IpSlot;
use crate::hub::{FrameReceiver, MemberGuard, Next, QueuedFrame, Registration};
use crate::replay::ReplayItem;
use protocol::log_id::{StreamId, encode_position};
use protocol::sse::{PING, expired_frame, with_id};

pub struct SseBody {
    preamble: Option<Bytes>,
    /// The backlog being replayed; `None` once it is sent (or when not resuming).
    replay: Option<mpsc::Receiver<ReplayItem>>,
    /// While resuming, what the client has of each log partition (its resume point, then the
    /// backlog): frames up to it are duplicates. `None` once the frames' own ids say as much.
    client_position: Option<ClientPosition>,
    rx: FrameReceiver,
    guard: MemberGuard,
    /// When the stream's token expires: then `relay.expired` is sent and the stream ends.
    expiry: Option<Pin<Box<Sleep>>>,
    expired: bool,
    /// When the last `relay.reset` was sent: a reset for an incident before it is not sent
    /// too (the client refetched its state after that incident).
    reset_sent_at: Option<Instant>,
    /// The client IP's stream slot, returned when the stream ends.
    _ip_slot: Option<IpSlot>,
}

impl SseBody {
    pub fn new(
        registration: Registration,
        preamble: Bytes,
        replay: Option<mpsc::Receiver<ReplayItem>>,
    ) -> Self {
        Self {
            preamble: Some(preamble),
            replay,
            client_position: None,
            rx: registration.rx,
            guard: registration.guard,
            expiry: None,
            expired: false,
            reset_sent_at: None,
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
            let left = expires_at.saturating_sub(crate::auth::unix_now_secs()).max(0) as u64;
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
            return Poll::Ready(Some(Ok(Frame::data(preamble))));
        }
        while let Some(replay) = this.replay.as_mut() {
            match replay.poll_recv(cx) {
                Poll::Ready(Some(ReplayItem::SeenThrough(position))) => {
                    this.client_position = Some(ClientPosition(position));
                }
                Poll::Ready(Some(ReplayItem::Frame(frame))) => {
                    if frame.reset_at.is_some() {
                        // What comes after is judged afresh (the replay says what the client
                        // will have refetched, if it knows).
                        this.client_position = None;
                        this.reset_sent_at = Some(Instant::now());
                        return Poll::Ready(Some(Ok(this.sent(frame.bytes.clone()))));
                    }
                    if let Some(bytes) = this.positioned(&frame) {
                        return Poll::Ready(Some(Ok(this.sent(bytes))));
                    }
                }
                // Backlog sent: go live.
                Poll::Ready(None) => this.replay = None,
                // The log is slow to answer (or Redis is away): keep the stream alive meanwhile.
                Poll::Pending => return this.rx.poll_ping(cx).map(|()| Some(Ok(ping()))),
            }
        }
        loop {
            match this.rx.poll_next(cx) {
                Poll::Ready(Some(Next::Frame(frame))) => {
                    if let Some(incident) = frame.reset_at {
                        // One incident, one reset: the stream already sent its client a reset
                        // after this incident (its resume found the log replaced), after which
                        // the client refetched its state.
                        if this.reset_sent_at.is_some_and(|sent| incident <= sent) {
                            continue;
                        }
                        this.reset_sent_at = Some(Instant::now());
                        return Poll::Ready(Some(Ok(this.sent(frame.bytes.clone()))));
                    }
                    match this.positioned(&frame) {
                        Some(bytes) => return Poll::Ready(Some(Ok(this.sent(bytes)))),
                        None => continue,
                    }
                }
                Poll::Ready(Some(Next::Ping)) => return Poll::Ready(Some(Ok(ping()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Per log partition, the last entry a resuming client has.
struct ClientPosition(Vec<StreamId>);

/// What a resuming stream does with a frame of the log.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// The client has it.
    Duplicate,
    /// Sent as encoded; `covers_client`: the position it states covers all the client has.
    AsStamped { covers_client: bool },
    /// Sent with this position as its `id:` instead.
    Restamped(String),
}

impl ClientPosition {
    /// The frame of entry `id` of `partition`, stating `stamp` (`None`: the id alone).
    fn admit(&mut self, partition: usize, id: StreamId, stamp: Option<&[StreamId]>) -> Admit {
        let client = &mut self.0;
        let Some(&has) = client.get(partition) else {
            // A position of another layout never gets here: the replay resets it.
            return Admit::AsStamped { covers_client: false };
        };
        if id <= has {
            return Admit::Duplicate;
        }
        client[partition] = id;
        match stamp {
            None if client.len() == 1 => Admit::AsStamped { covers_client: true },
            // Replayed to this stream alone: its position is the client's.
            None => Admit::Restamped(encode_position(client)),
            Some(stamp) if stamp.len() != client.len() => Admit::AsStamped { covers_client: false },
            Some(stamp) if stamp.iter().zip(client.iter()).all(|(stamped, has)| stamped >= has) => {
                client.copy_from_slice(stamp);
                Admit::AsStamped { covers_client: true }
            }
            Some(stamp) => {
                for (has, stamped) in client.iter_mut().zip(stamp) {
                    *has = (*has).max(*stamped);
                }
                Admit::Restamped(encode_position(client))
            }
        }
    }
}

fn ping() -> Frame<Bytes> {
    Frame::data(Bytes::from_static(PING))
}

impl SseBody {
    /// The bytes to send for `frame`, stating a position that covers what the client has;
    /// `None` when the client has the frame already.
    fn positioned(&mut self, frame: &QueuedFrame) -> Option<Bytes> {
        let (Some(id), Some(client)) = (frame.id, self.client_position.as_mut()) else {
            return Some(frame.bytes.clone());
        };
        match client.admit(usize::from(frame.partition), id, frame.stamp.as_deref()) {
            Admit::Duplicate => None,
            Admit::AsStamped { covers_client } => {
                // Once the backlog is sent, live positions only grow: nothing left to compare.
                if covers_client && self.replay.is_none() {
                    self.client_position = None;
                }
                Some(frame.bytes.clone())
            }
            Admit::Restamped(position) => Some(with_id(&frame.bytes, &position)),
        }
    }

    fn sent(&mut self, bytes: Bytes) -> Frame<Bytes> {
        self.guard.frame_sent();
        Frame::data(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    #[test]
    fn with_one_partition_the_id_alone_says_what_the_client_has() {
        let mut client = ClientPosition(vec![at(5)]);
        assert_eq!(client.admit(0, at(4), None), Admit::Duplicate);
        assert_eq!(client.admit(0, at(5), None), Admit::Duplicate);
        assert_eq!(client.admit(0, at(6), None), Admit::AsStamped { covers_client: true });
        assert_eq!(client.admit(0, at(6), None), Admit::Duplicate);
    }

    #[test]
    fn a_client_ahead_of_the_relay_in_a_partition_keeps_its_position_in_the_ids_it_gets() {
        let mut client = ClientPosition(vec![at(10), at(20), at(30)]);
        // Replayed from the log: the client's position with this entry.
        let replayed = [at(10), at(21), at(30)];
        assert_eq!(client.admit(1, at(21), None), Admit::Restamped(encode_position(&replayed)));
        // The relay had read partition 1 only up to 15 when it delivered 11: the client keeps 21.
        let stamp = [at(11), at(15), at(31)];
        let kept = [at(11), at(21), at(31)];
        assert_eq!(client.admit(0, at(11), Some(&stamp)), Admit::Restamped(encode_position(&kept)));
        assert_eq!(client.admit(2, at(31), Some(&[at(11), at(15), at(31)])), Admit::Duplicate);
        // From here the relay's positions cover the client's.
        assert_eq!(
            client.admit(1, at(22), Some(&[at(12), at(22), at(32)])),
            Admit::AsStamped { covers_client: true }
        );
        assert_eq!(client.0, vec![at(12), at(22), at(32)]);
        assert_eq!(client.admit(0, at(12), Some(&[at(12), at(23), at(32)])), Admit::Duplicate);
    }
}
