//! Whole messages instead of bytes: a [`MessageHandler`] gets one call per
//! frame, for the [`Framing`] chosen (length-prefixed, line or raw), and
//! sends framed replies with [`MsgConn::send_msg`].
//!
//! [`Framed`] adapts a `MessageHandler` to the engine's byte-level
//! [`Handler`]: every complete frame in the bytes the engine lends is decoded
//! in place (no copy) and handed over; an incomplete one is left unconsumed
//! until the rest arrives. A frame over the limit — for length-prefixed
//! frames, as soon as the 4-byte header says so; for lines, as soon as the
//! line grows past the limit — closes that connection with
//! [`CloseReason::FrameTooLarge`] before any buffer of that size exists;
//! other connections are untouched.

use std::time::Duration;

use crate::bus::SendError;
use crate::connect::ConnectError;
use crate::framing::{FrameError, Framing};
use crate::handler::{CloseReason, Conn, Ctx, Handler};
use crate::token::ConnId;

/// User code that serves connections message by message.
pub trait MessageHandler {
    /// What the handler keeps for each connection (see
    /// [`Handler::State`]): made by `on_open`, lent with each message and
    /// timer, given to `on_close`.
    type State;

    /// See [`Handler::on_start`].
    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// See [`Handler::on_connect_failed`].
    fn on_connect_failed(&mut self, tag: u64, err: &ConnectError) {
        let _ = (tag, err);
    }

    /// A connection opened (accepted or connected out): make its state.
    fn on_open(&mut self, conn: &mut MsgConn<'_, '_>) -> Self::State;

    /// One whole message (the payload, without header or line ending).
    fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, state: &mut Self::State, msg: &[u8]);

    /// The connection closed; `reason` is [`CloseReason::FrameTooLarge`]
    /// when the peer sent a frame over the limit.
    fn on_close(&mut self, id: ConnId, state: Self::State, reason: &CloseReason) {
        let _ = (id, state, reason);
    }

    /// See [`Handler::on_timer`].
    fn on_timer(&mut self, conn: &mut MsgConn<'_, '_>, state: &mut Self::State, id: u64) {
        let _ = (conn, state, id);
    }

    /// See [`Handler::on_worker_timer`].
    fn on_worker_timer(&mut self, ctx: &mut Ctx<'_>, id: u64) {
        let _ = (ctx, id);
    }
}

/// What [`Framed`] keeps per connection: how far the partial frame held
/// back has been scanned (so a long line arriving in small pieces is not
/// scanned again from its start on every read), and the message handler's
/// own state.
#[derive(Debug)]
pub struct FramedState<S> {
    scanned: usize,
    /// The message handler's state for the connection.
    pub inner: S,
}

/// A connection lent to a [`MessageHandler`]: the byte-level [`Conn`] plus
/// the framing to send with.
pub struct MsgConn<'c, 'a> {
    conn: &'c mut Conn<'a>,
    framing: Framing,
}

impl<'a> MsgConn<'_, 'a> {
    /// Frame `payload` and queue it. A payload the framing cannot carry (over
    /// the limit, or a line containing `\n`) is an error and nothing is
    /// queued.
    pub fn send_msg(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        let mut framed = Vec::with_capacity(payload.len() + 4);
        self.framing.encode(payload, &mut framed)?;
        self.conn.send(&framed);
        Ok(())
    }

    /// Frame `payload` once and queue it on every open connection of the
    /// node, on every worker (this one included).
    pub fn broadcast(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        let framed = self.frame(payload)?;
        self.conn.broadcast(&framed);
        Ok(())
    }

    /// [`MsgConn::broadcast`] to every connection but this one.
    pub fn broadcast_others(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        let framed = self.frame(payload)?;
        self.conn.broadcast_others(&framed);
        Ok(())
    }

    /// Frame `payload` and queue it on connection `to`, on whichever worker
    /// owns it; an id that is not open is an error, not a panic.
    pub fn send_to(&mut self, to: ConnId, payload: &[u8]) -> Result<(), MessageError> {
        let framed = self.frame(payload)?;
        Ok(self.conn.send_to(to, &framed)?)
    }

    fn frame(&self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut framed = Vec::with_capacity(payload.len() + 4);
        self.framing.encode(payload, &mut framed)?;
        Ok(framed)
    }

    /// The byte-level connection (id, addresses, socket options, close,
    /// outbound connects).
    pub fn conn(&mut self) -> &mut Conn<'a> {
        self.conn
    }

    /// The connection's stable id.
    pub fn id(&self) -> ConnId {
        self.conn.id()
    }

    /// The tag of the outbound request that made this connection.
    pub fn tag(&self) -> Option<u64> {
        self.conn.tag()
    }

    /// Close once everything queued has been sent.
    pub fn close(&mut self) {
        self.conn.close();
    }

    /// See [`Conn::connect`].
    pub fn connect<A: Into<crate::Address> + Clone>(
        &mut self,
        addrs: &[A],
        timeout: Duration,
        tag: u64,
    ) {
        self.conn.connect(addrs, timeout, tag);
    }
}

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The payload does not fit the framing.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The target connection is not open.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Serves a [`MessageHandler`] over a [`Framing`]; give it to
/// [`crate::Engine::start`] like any [`Handler`].
///
/// ```no_run
/// use ringnet::framing::Framing;
/// use ringnet::message::{Framed, MessageHandler, MsgConn};
/// use ringnet::{Config, Engine};
///
/// /// Echoes every length-prefixed frame.
/// struct FrameEcho;
/// impl MessageHandler for FrameEcho {
///     type State = ();
///     fn on_open(&mut self, _conn: &mut MsgConn<'_, '_>) {}
///     fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, _: &mut (), msg: &[u8]) {
///         let _ = conn.send_msg(msg);
///     }
/// }
///
/// let framing = Framing::LengthPrefixed { max: ringnet::framing::DEFAULT_MAX_FRAME };
/// let engine = Engine::start(Config::default(), move |_| Framed::new(framing, FrameEcho))?;
/// # engine.shutdown()?;
/// # Ok::<(), ringnet::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Framed<M> {
    framing: Framing,
    inner: M,
}

impl<M: MessageHandler> Framed<M> {
    /// `inner` served over `framing`.
    pub fn new(framing: Framing, inner: M) -> Framed<M> {
        Framed { framing, inner }
    }

    /// The message handler.
    pub fn inner(&mut self) -> &mut M {
        &mut self.inner
    }
}

impl<M: MessageHandler> Handler for Framed<M> {
    type State = FramedState<M::State>;

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        self.inner.on_start(ctx);
    }

    fn on_connect_failed(&mut self, tag: u64, err: &ConnectError) {
        self.inner.on_connect_failed(tag, err);
    }

    fn on_open(&mut self, conn: &mut Conn<'_>) -> Self::State {
        let inner = self.inner.on_open(&mut MsgConn {
            conn,
            framing: self.framing,
        });
        FramedState { scanned: 0, inner }
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, state: &mut Self::State, data: &[u8]) -> usize {
        let mut consumed = 0;
        while !conn.is_closing() {
            // Only the first frame can be the partial one held back.
            let from = if consumed == 0 { state.scanned } else { 0 };
            match self.framing.decode_from(&data[consumed..], from) {
                Ok(Some((frame, used))) => {
                    consumed += used;
                    state.scanned = 0;
                    self.inner.on_message(
                        &mut MsgConn {
                            conn,
                            framing: self.framing,
                        },
                        &mut state.inner,
                        frame.payload(),
                    );
                }
                Ok(None) => {
                    state.scanned = data.len() - consumed;
                    break;
                }
                Err(FrameError::FrameTooLarge { declared, limit }) => {
                    conn.close_with(CloseReason::FrameTooLarge { declared, limit });
                    return data.len();
                }
                Err(other) => {
                    conn.close_with(CloseReason::BadFrame(other.to_string()));
                    return data.len();
                }
            }
        }
        consumed
    }

    fn on_close(&mut self, id: ConnId, state: Self::State, reason: &CloseReason) {
        self.inner.on_close(id, state.inner, reason);
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, state: &mut Self::State, id: u64) {
        self.inner.on_timer(
            &mut MsgConn {
                conn,
                framing: self.framing,
            },
            &mut state.inner,
            id,
        );
    }

    fn on_worker_timer(&mut self, ctx: &mut Ctx<'_>, id: u64) {
        self.inner.on_worker_timer(ctx, id);
    }
}
