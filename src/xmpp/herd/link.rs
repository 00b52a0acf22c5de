//! The herd session's connection: the sending half, and the receiving half
//! watched while a request is in flight, so that a link that drops (or
//! that tokio-xmpp re-establishes under the session) ends the session at
//! once instead of at the request's timeout.
//!
//! Both halves are polled by the session's one task: tokio-xmpp 6's
//! receiver returns `Pending` without a waker while the sender holds the
//! client, so a second task waiting on it would not be woken.

use std::collections::VecDeque;

use futures_util::StreamExt;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::{Event, Stanza};

use super::super::requests::IqError;

/// Notifications applied in one commit at most.
const READY_MAX: usize = 256;

/// One session's connection: the sending half, and the receiving half
/// watched while a request is in flight.
pub(super) struct Link {
    pub(super) sender: tokio_xmpp::ClientSender,
    pub(super) watch: Watch,
    pub(super) bound: Jid,
}

/// The receiving half of the connection and the notifications read while
/// waiting for an answer (applied once the session is free again).
pub(super) struct Watch {
    pub(super) events: tokio_xmpp::ClientReceiver,
    pub(super) backlog: VecDeque<tokio_xmpp::parsers::message::Message>,
}

impl Watch {
    /// The notifications already received (without waiting), the backlog
    /// first; Err when the connection turns out lost.
    pub(super) fn ready(&mut self) -> Result<Vec<tokio_xmpp::parsers::message::Message>, Failed> {
        use futures_util::FutureExt;
        let mut out: Vec<_> = self.backlog.drain(..).collect();
        while out.len() < READY_MAX {
            match self.events.next().now_or_never() {
                None => break,
                Some(Some(Event::Stanza(Stanza::Message(m)))) => out.push(m),
                Some(Some(Event::Stanza(_))) => {}
                Some(other) => return Err(lost(other)),
            }
        }
        Ok(out)
    }

    /// Wait for `request` while watching the connection: when it drops or
    /// tokio-xmpp re-establishes it under us (the answer would never come),
    /// the session ends at once, not at the request's timeout. Both halves
    /// are polled by this one task: tokio-xmpp's receiver does not wake a
    /// second task waiting on it while the sender holds the client.
    pub(super) async fn during<T>(
        &mut self,
        request: impl Future<Output = Result<T, IqError>>,
    ) -> Result<T, Failed> {
        tokio::pin!(request);
        loop {
            tokio::select! {
                biased;
                r = &mut request => return r.map_err(Failed::from),
                ev = self.events.next() => match ev {
                    Some(Event::Stanza(Stanza::Message(m))) => self.backlog.push_back(m),
                    Some(Event::Stanza(_)) => {}
                    other => return Err(lost(other)),
                },
            }
        }
    }
}

/// Why the connection ended, from the event that said so.
pub(super) fn lost(ev: Option<Event>) -> Failed {
    Failed(match ev {
        None => "the client stopped".into(),
        Some(Event::Disconnected(e)) => format!("connection lost: {e}"),
        // Reconnected under us: subscriptions and what was in flight may
        // be gone; the session starts afresh.
        Some(Event::Online { .. }) => "the connection was re-established".into(),
        Some(Event::Stanza(_)) => "unexpected stanza".into(),
    })
}

/// A failed session, with why.
pub(super) struct Failed(pub(super) String);

impl From<IqError> for Failed {
    fn from(e: IqError) -> Self {
        Failed(e.to_string())
    }
}
