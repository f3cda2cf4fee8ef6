//! `echo`: every byte received is sent back, in order.

use crate::handler::{Conn, Handler};

/// Echoes every byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, conn: &mut Conn<'_>, data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}
