//! Process-wide settings taken at start-up: the open-files limit (which also bounds how
//! many connections the transport may hold) and glibc's allocator behaviour.
//!
//! The only `unsafe` here is plain libc calls on local values; nothing touches descriptors
//! or memory that other code owns.

use std::io;

/// Descriptors kept free for everything that is not a client connection: the database and
/// its WAL, attachments being read or written, upstream LLM connections, the log.
const RESERVED_FDS: u64 = 64;

/// Makes glibc serve allocations of 1 MiB or more from their own mappings and unmap them
/// when freed (by default glibc raises that threshold after the first large free, so the
/// 19 MiB argon2 buffer of one login would stay in the process for good), and caps its
/// malloc arenas at two.
pub fn return_large_frees_to_the_os() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes an allocator setting.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        // One thread per connection: without a cap glibc gives busy threads arenas of their
        // own (up to 8 per core), each holding freed memory.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives the memory glibc holds freed back to the OS (`malloc_trim`): after start-up's
/// one-off work, and now and then from the upkeep thread, so an idle server's resident
/// size is what it uses, not what a burst once needed.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lifts the soft open-files limit to the hard limit and returns the soft limit in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                log::warn!("cannot raise the open-files limit: {}", io::Error::last_os_error());
            }
        }
    }
    // rlim_t is 32 bits on 32-bit ARM (the Pi), 64 here.
    #[allow(clippy::unnecessary_cast)]
    Some(lim.rlim_cur as u64)
}

/// The connection cap that fits the open-files limit: each connection holds one
/// descriptor, and [`RESERVED_FDS`] stay free for the rest, so accepting never runs the
/// process out of descriptors (which would also fail database and file opens).
pub fn connection_cap(wanted: usize, nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile else { return wanted };
    let fits = nofile.saturating_sub(RESERVED_FDS).max(1);
    wanted.min(usize::try_from(fits).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(connection_cap(1024, Some(65536)), 1024);
        assert_eq!(connection_cap(1024, Some(300)), 236);
        assert_eq!(connection_cap(1024, Some(10)), 1);
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(
            connection_cap(usize::MAX, Some(u64::MAX)),
            usize::try_from(u64::MAX - 64).unwrap_or(usize::MAX)
        );
    }
}
