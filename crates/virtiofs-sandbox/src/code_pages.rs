//! The namespace supervisor lets go of the code and read-only data it ran only to start up.
//!
//! A process keeps mapped every page of its binary and libraries it ever touched. The
//! supervisor, after the fork, only forwards signals and waits, yet keeps mapped all the
//! start-up ran (argument parsing, logging and sandbox set-up): 3–4 MiB of RSS on every VM's
//! host. The sandboxed child does not inherit those mappings (fork copies no page-table entries
//! of file pages). (The same call in the daemon itself, once started, measured nothing: a fault
//! maps back the whole page-cache folio and the pages around it, and serving touches enough
//! code to bring nearly all of it back.)
//!
//! [`release`] drops this process's mappings of whole pages of the non-writable segments of
//! every loaded object (code, read-only data; `madvise(MADV_DONTNEED)`): such pages are clean
//! copies of the file, which the kernel keeps in its page cache and maps again on the next
//! access (a minor fault). Only whole pages inside such a segment are touched: RELRO data
//! (written by the dynamic linker, then made read-only) lies in a writable segment, and a page
//! shared with one is never dropped.

use std::ffi::{c_int, c_void, CStr};

/// Drops this process's mappings of its code and read-only data pages (see the module docs);
/// returns how many bytes of mappings were dropped. Cannot fail: a range the kernel refuses is
/// skipped. Call it once start-up is over; what runs afterwards maps its pages again.
pub(crate) fn release() -> usize {
    let mut released = 0usize;
    // SAFETY: the callback only reads the program headers it is given and calls madvise on
    // non-writable segments of loaded objects (see `each_object`).
    unsafe { libc::dl_iterate_phdr(Some(each_object), (&mut released as *mut usize).cast()) };
    released
}

/// `dl_iterate_phdr` callback: drops the pages of `info`'s non-writable segments, adding the
/// bytes dropped to `*data` (a `usize`).
unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the C library passes a valid entry for the duration of the call, and `data` is
    // the `usize` of `release`.
    let (info, released) = unsafe { (&*info, &mut *data.cast::<usize>()) };
    // The vDSO is the kernel's own mapping: leave it.
    let name = if info.dlpi_name.is_null() {
        &b""[..]
    } else {
        // SAFETY: a NUL-terminated name owned by the dynamic linker.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    if name.windows(4).any(|w| w == b"vdso") {
        return 0;
    }
    // SAFETY: plain getter.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    for i in 0..usize::from(info.dlpi_phnum) {
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` headers.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
        let end = start.wrapping_add(ph.p_memsz as usize);
        // Whole pages inside the segment only.
        let (first, last) = (start.next_multiple_of(page), end / page * page);
        if last <= first {
            continue;
        }
        // SAFETY: the range is mapped, never-written code or data of a loaded object; dropping
        // clean file pages only makes the next access fault them in again from the page cache.
        let r = unsafe { libc::madvise(first as *mut c_void, last - first, libc::MADV_DONTNEED) };
        if r == 0 {
            *released += last - first;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_constants_still_work_after_their_pages_are_dropped() {
        static TABLE: [u64; 4] = [3, 1, 4, 1];
        let released = release();
        assert!(released > 0, "this test binary's own code counts");
        // Everything below runs from pages just dropped: they come back from the file.
        let v: Vec<u64> = (0..1000).map(|i| i * TABLE[i as usize % 4]).collect();
        assert_eq!(v.iter().sum::<u64>(), 1_123_500);
        assert_eq!(format!("{}", "forty-two".len()), "9");
    }
}
