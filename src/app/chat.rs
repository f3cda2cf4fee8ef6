//! `chat`: line-framed; every line a client sends goes to every other
//! connection of the node. With a peer (`--peer HOST:PORT`), the node keeps a
//! connection to another chat node (reconnecting with backoff if it drops),
//! and since a line from any connection goes to all the others, two nodes
//! relay each other's clients. Peer links are treated like clients whichever
//! side opened them; a line is never sent back where it came from. (Two
//! nodes; a ring of three or more would pass lines around it.)

use std::time::Duration;

use crate::handler::Ctx;
use crate::message::{MessageHandler, MsgConn};

/// The tag of the outbound link to the peer node.
pub const PEER_TAG: u64 = 0x70ee;

/// The chat handler; `peer`: the other node's addresses, joined from
/// worker 0.
#[derive(Debug, Clone, Default)]
pub struct Chat {
    /// Addresses of the node to join (IP or Unix).
    pub peer: Option<Vec<crate::Address>>,
}

impl MessageHandler for Chat {
    /// Nothing per connection: every line goes to everyone else.
    type State = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        if let (0, Some(peer)) = (ctx.worker(), &self.peer) {
            ctx.connect_persistent(peer, Duration::from_secs(5), PEER_TAG);
        }
    }

    fn on_open(&mut self, _conn: &mut MsgConn<'_, '_>) {}

    fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, _: &mut (), line: &[u8]) {
        // A line that arrived as a line always fits the framing again.
        let _ = conn.broadcast_others(line);
    }
}
