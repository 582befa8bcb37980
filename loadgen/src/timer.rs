//! A precise wake-up for the open-loop sender: a Linux `timerfd` registered
//! in the thread's mio `Poll`.
//!
//! epoll timeouts have millisecond granularity. Sleeping blindly until the
//! next intended send time would leave replies unread meanwhile and add up
//! to one send interval to every measured latency; a millisecond poll
//! timeout would batch sends. A timerfd wakes `epoll_wait` at the exact
//! nanosecond while replies still wake it at once.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::os::fd::RawFd;
use std::time::Duration;

pub struct Timer {
    fd: RawFd,
}

impl Timer {
    /// A monotonic, non-blocking timerfd registered under `token`.
    pub fn new(registry: &Registry, token: Token) -> std::io::Result<Timer> {
        // SAFETY: plain syscall with constant flags; the fd is owned by Timer.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let t = Timer { fd };
        registry.register(&mut SourceFd(&t.fd), token, Interest::READABLE)?;
        Ok(t)
    }

    /// Fires once, `after` from now (at least 1 ns: zero would disarm it).
    pub fn arm(&self, after: Duration) {
        let ns = after.as_nanos().clamp(1, 10_000_000_000) as i64;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid fd owned by self, valid pointer to a local itimerspec.
        unsafe {
            libc::timerfd_settime(self.fd, 0, &spec, std::ptr::null_mut());
        }
    }

    /// Clears the readiness after it fired.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer from our fd;
        // non-blocking, so an un-fired timer just returns EAGAIN.
        unsafe {
            libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len());
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: we own the fd and close it once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    #[test]
    fn wakes_poll_with_sub_millisecond_precision() {
        let mut poll = Poll::new().unwrap();
        let t = Timer::new(poll.registry(), Token(7)).unwrap();
        let mut events = Events::with_capacity(4);
        let start = Instant::now();
        t.arm(Duration::from_micros(300));
        poll.poll(&mut events, Some(Duration::from_secs(2)))
            .unwrap();
        let took = start.elapsed();
        assert!(events.iter().any(|e| e.token() == Token(7)));
        assert!(took >= Duration::from_micros(300), "{took:?}");
        // Generous bound (shared CI machines), still well under epoll's 2 s.
        assert!(took < Duration::from_millis(500), "{took:?}");
        t.clear();
    }
}
