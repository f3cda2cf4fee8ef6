//! `echo`: every byte received is sent back, in order.

use crate::handler::{Conn, Handler};

/// Echoes every byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    #[inline]
    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}
