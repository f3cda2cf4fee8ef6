//! Unix socket files of listeners: making way for one (a stale file is
//! replaced, a live one is in use, anything else is left alone) and
//! removing it when its listener goes.

use std::io;
use std::path::{Path, PathBuf};

use crate::address::Address;
use crate::error::Error;

/// Make way for a Unix listener at `path`: nothing there is fine; a socket
/// file nobody listens on (a crashed server's) is removed; a socket someone
/// listens on is [`Error::AddressInUse`]; anything else that is not a
/// socket is left alone and refused.
pub(super) fn remove_stale(addr: &Address, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let bind_err = |source| Error::bind(addr.clone(), source);
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bind_err(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(bind_err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::AddressInUse(addr.clone())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(bind_err(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(bind_err(e)),
    }
}

/// The socket file of a Unix listener this process bound. Dropping it
/// removes the file, unless the path now names another file (a newer
/// server replaced it).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub(super) fn new(path: &Path) -> io::Result<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{listen, ListenOpts};
    use super::*;

    /// A fresh directory for socket files, removed afterwards.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("ringnet-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("mkdir");
            Dir(p)
        }

        fn sock(&self, name: &str) -> Address {
            Address::Unix(crate::UnixAddr::Path(self.0.join(name)))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_unix_socket_file_is_made_with_its_mode_and_removed_with_its_guard() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Dir::new("unix-mode");
        let addr = dir.sock("a.sock");
        let path = addr.unix_path().expect("path").to_path_buf();
        let opts = ListenOpts {
            unix_mode: Some(0o640),
            ..ListenOpts::default()
        };
        let l = listen(&addr, opts).expect("listen");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        std::os::unix::net::UnixStream::connect(&path).expect("connect");
        drop(l.file);
        assert!(!path.exists(), "socket file left behind");
    }

    #[test]
    fn a_stale_socket_file_is_replaced_and_a_live_one_is_address_in_use() {
        let dir = Dir::new("unix-stale");
        let addr = dir.sock("s.sock");
        let path = addr.unix_path().expect("path").to_path_buf();
        // A server that went away without removing its file.
        let crashed = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        drop(crashed);
        assert!(path.exists());
        let live = listen(&addr, ListenOpts::default()).expect("stale file replaced");
        match listen(&addr, ListenOpts::default()) {
            Err(Error::AddressInUse(a)) => assert_eq!(a, addr),
            Err(e) => panic!("expected AddressInUse, got {e}"),
            Ok(_) => panic!("a live socket file was replaced"),
        }
        // Still the first listener's file, and it still serves.
        std::os::unix::net::UnixStream::connect(&path).expect("live listener still there");
        drop(live);
    }

    #[test]
    fn a_unix_path_that_cannot_be_a_listener_is_refused_with_the_reason() {
        let dir = Dir::new("unix-bad");
        // A regular file is never removed.
        let file = dir.sock("plain");
        std::fs::write(file.unix_path().expect("path"), b"data").expect("write");
        match listen(&file, ListenOpts::default()) {
            Err(Error::Bind { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists)
            }
            Err(e) => panic!("expected Bind, got {e}"),
            Ok(_) => panic!("listened over a regular file"),
        }
        assert_eq!(
            std::fs::read(file.unix_path().expect("path")).expect("read"),
            b"data"
        );
        // A directory that does not exist.
        let missing = Address::Unix(crate::UnixAddr::Path(dir.0.join("no/such/dir/s.sock")));
        match listen(&missing, ListenOpts::default()) {
            Err(Error::Bind { source, addr }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                assert_eq!(addr, missing);
            }
            Err(e) => panic!("expected Bind, got {e}"),
            Ok(_) => panic!("listened in a missing directory"),
        }
    }

    #[test]
    fn a_replaced_socket_file_is_not_removed_by_the_old_guard() {
        let dir = Dir::new("unix-replaced");
        let addr = dir.sock("r.sock");
        let path = addr.unix_path().expect("path").to_path_buf();
        let old = listen(&addr, ListenOpts::default()).expect("listen");
        // Someone removed it and a newer server took the path.
        std::fs::remove_file(&path).expect("rm");
        let newer = listen(&addr, ListenOpts::default()).expect("newer");
        drop(old);
        assert!(path.exists(), "the newer server's file was removed");
        std::os::unix::net::UnixStream::connect(&path).expect("newer still reachable");
        drop(newer);
        assert!(!path.exists());
    }

    #[test]
    fn an_abstract_name_is_taken_once() {
        let addr =
            Address::parse(&format!("unix:@ringnet-test-{}", std::process::id())).expect("addr");
        let l = listen(&addr, ListenOpts::default()).expect("listen");
        assert!(l.file.is_none());
        assert_eq!(
            Address::from_sock_addr(&l.sock.local_addr().expect("name")).expect("addr"),
            addr
        );
        assert!(matches!(
            listen(&addr, ListenOpts::default()),
            Err(Error::AddressInUse(_))
        ));
    }
}
