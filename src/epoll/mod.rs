//! The epoll backend: the same handler contract as io_uring, on readiness
//! events, for machines where io_uring is missing or switched off (seccomp,
//! `kernel.io_uring_disabled`, kernels before 6.0). Its system calls live in
//! `sys::epoll`; this module holds no unsafe code.

pub(crate) mod worker;
