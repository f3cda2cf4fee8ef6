//! Anonymous private memory mappings, mmap(2) with `MAP_PRIVATE |
//! MAP_ANONYMOUS`: page-aligned, zero-filled memory of our own that the
//! kernel may be told to read and write directly (a provided buffer ring,
//! io_uring_setup_buf_ring(3)). Both the workers' buffer rings and the
//! probe's test ring live in one.

use std::io;
use std::ptr::NonNull;

/// What backs a mapping asked to be on huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HugePages {
    /// hugetlbfs pages from the system's reserved pool.
    Reserved,
    /// Ordinary pages advised `MADV_HUGEPAGE` (THP).
    Transparent,
    /// Neither was possible (THP off): ordinary pages.
    None,
}

/// An anonymous private read-write mapping, unmapped when dropped.
///
/// It hands out only a raw pointer, never a reference, so Rust code that
/// reads or writes the memory does so in `unsafe` blocks that justify it.
/// Whoever shares the memory with the kernel (registers it as a buffer
/// ring) must keep the mapping alive while the kernel may use it: drop it
/// only after the registration is gone (unregistered, or its ring torn
/// down with nothing left in flight), or give it up with
/// [`AnonMap::leak`].
pub(crate) struct AnonMap {
    ptr: NonNull<u8>,
    len: usize,
}

impl AnonMap {
    /// Map `len` bytes of fresh, zero-filled, page-aligned memory.
    pub(crate) fn new(len: usize) -> io::Result<AnonMap> {
        // SAFETY: an anonymous private mapping with no address hint only
        // creates new memory; it cannot alias or replace anything that
        // already exists. The result is checked against MAP_FAILED.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(addr.cast::<u8>())
            .map(|ptr| AnonMap { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))
    }

    /// Map `len` bytes on huge pages: hugetlbfs pages (`MAP_HUGETLB`, 2 MiB
    /// each, `len` rounded up to them) when the system has some reserved,
    /// else ordinary pages advised `MADV_HUGEPAGE` (transparent huge pages,
    /// as the kernel's THP mode allows). Says which it got.
    pub(crate) fn new_huge(len: usize) -> io::Result<(AnonMap, HugePages)> {
        const HUGE: usize = 2 << 20;
        let rounded = len.div_ceil(HUGE) * HUGE;
        // SAFETY: as in `new`: a fresh anonymous mapping, checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                rounded,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
                -1,
                0,
            )
        };
        if addr != libc::MAP_FAILED {
            if let Some(ptr) = NonNull::new(addr.cast::<u8>()) {
                return Ok((AnonMap { ptr, len: rounded }, HugePages::Reserved));
            }
        }
        let map = AnonMap::new(len)?;
        // SAFETY: advice on exactly the mapping just made; it changes how
        // the kernel backs it, not its contents or validity.
        let rc = unsafe { libc::madvise(map.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        let kind = if rc == 0 {
            HugePages::Transparent
        } else {
            HugePages::None
        };
        Ok((map, kind))
    }

    /// The start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Give the mapping up without unmapping it: for memory the kernel might
    /// still write into (a request that could not be shown to have ended).
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly the mapping `new` created, and
        // this value is its only owner. No Rust reference into it outlives
        // the owner (only raw pointers are handed out, and the types built
        // on it borrow from themselves), and the kernel no longer uses it:
        // owners drop it only after its registration is gone, and leak it
        // otherwise (the type's contract).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_zeroed_page_aligned_writable_memory() {
        let len = 3 * crate::sys::page_size() + 100;
        let map = AnonMap::new(len).expect("mmap");
        assert_eq!(map.as_ptr() as usize % crate::sys::page_size(), 0);
        // SAFETY: the mapping is `len` bytes long, readable and writable, and
        // nothing else refers to it while this slice lives.
        let bytes = unsafe { std::slice::from_raw_parts_mut(map.as_ptr(), len) };
        assert!(bytes.iter().all(|&b| b == 0), "fresh memory is zero-filled");
        bytes[len - 1] = 0xa5;
        assert_eq!(bytes[len - 1], 0xa5);
    }

    #[test]
    fn a_huge_mapping_is_usable_whatever_backs_it() {
        let (map, kind) = AnonMap::new_huge(3 << 20).expect("mmap");
        // SAFETY: at least 3 MiB long, readable and writable, and nothing
        // else refers to it while this slice lives.
        let bytes = unsafe { std::slice::from_raw_parts_mut(map.as_ptr(), 3 << 20) };
        bytes[(3 << 20) - 1] = 7;
        assert_eq!(bytes[(3 << 20) - 1], 7);
        if kind == HugePages::Reserved {
            assert_eq!(map.as_ptr() as usize % (2 << 20), 0, "a huge page boundary");
        }
    }

    #[test]
    fn a_zero_length_mapping_is_an_error() {
        let err = AnonMap::new(0).err().expect("mmap of 0 bytes fails");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
