//! `framed-echo` and `line-echo`: echo each whole message back, framed the
//! same way (length-prefixed, or one line).

use crate::message::{MessageHandler, MsgConn};

/// Echoes every message in the connection's framing.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageEcho;

impl MessageHandler for MessageEcho {
    type State = ();

    fn on_open(&mut self, _conn: &mut MsgConn<'_, '_>) {}

    fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, _: &mut (), msg: &[u8]) {
        // A message that arrived in this framing always fits it again.
        if let Err(e) = conn.send_msg(msg) {
            conn.conn()
                .close_with(crate::CloseReason::BadFrame(e.to_string()));
        }
    }
}
