//! One file per operation, each with its io_uring form and its epoll form
//! side by side in the same function.

pub(crate) mod accept;
pub(crate) mod close;
pub(crate) mod connect;
pub(crate) mod recv;
pub(crate) mod send;
