//! Ready-made handlers behind `ringnet serve MODE`.

pub mod echo;
pub mod framed;
pub mod http;
