//! Ready-made handlers behind `ringnet serve MODE`.

pub mod chat;
pub mod echo;
pub mod framed;
pub mod http;
