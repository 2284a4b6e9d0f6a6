//! A connection's output: a queue of buffers (shared event frames, static
//! comments, owned responses) and how far into the first one the socket
//! has taken. Flushed with one vectored write per call, so every frame
//! queued during a loop turn leaves in as few syscalls as the kernel allows.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use crate::sse::Frame;

/// Slices handed to one `writev` (Linux caps a call at 1024).
const IOV_MAX: usize = 64;

pub enum Buf {
    Static(&'static [u8]),
    Shared(Frame),
    Owned(Vec<u8>),
}

impl Buf {
    fn bytes(&self) -> &[u8] {
        match self {
            Buf::Static(b) => b,
            Buf::Shared(f) => f,
            Buf::Owned(v) => v,
        }
    }
}

#[derive(Default)]
pub struct OutQ {
    bufs: VecDeque<Buf>,
    /// Bytes of `bufs[0]` already written.
    head_offset: usize,
    /// Unsent bytes in the queue.
    queued: usize,
}

/// How a flush ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written.
    Empty,
    /// The socket is full; wait for it to become writable.
    Blocked,
    /// The byte budget ran out with the socket still writable.
    Budget,
}

impl OutQ {
    pub fn push(&mut self, buf: Buf) {
        self.queued += buf.bytes().len();
        self.bufs.push_back(buf);
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Writes until empty, blocked, or `budget` bytes written. Returns how
    /// it ended and the bytes written.
    pub fn flush(&mut self, w: &mut impl Write, budget: usize) -> io::Result<(Flushed, usize)> {
        let mut written = 0;
        while self.queued > 0 {
            if written >= budget {
                return Ok((Flushed::Budget, written));
            }
            let mut slices = [IoSlice::new(&[]); IOV_MAX];
            let mut count = 0;
            for (i, buf) in self.bufs.iter().take(IOV_MAX).enumerate() {
                let skip = if i == 0 { self.head_offset } else { 0 };
                slices[i] = IoSlice::new(&buf.bytes()[skip..]);
                count += 1;
            }
            // One buffer (the common case: a handshake, one event) goes by
            // send(2), cheaper in the kernel than writev(2).
            let result = if count == 1 { w.write(&slices[0]) } else { w.write_vectored(&slices[..count]) };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((Flushed::Blocked, written)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((Flushed::Empty, written))
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let left = self.bufs[0].bytes().len() - self.head_offset;
            if n < left {
                self.head_offset += n;
                return;
            }
            n -= left;
            self.bufs.pop_front();
            self.head_offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, then blocks after
    /// `calls` calls.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.cap - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn queue() -> OutQ {
        let mut q = OutQ::default();
        q.push(Buf::Static(b":hs\n\n"));
        q.push(Buf::Shared(Frame::from(&b"data: 1\n\n"[..])));
        q.push(Buf::Owned(b"data: 2\n\n".to_vec()));
        q
    }

    #[test]
    fn resumes_mid_buffer_in_order() {
        let want = b":hs\n\ndata: 1\n\ndata: 2\n\n";
        for cap in [1, 3, 5, 7, 100] {
            let mut q = queue();
            let mut w = Trickle { got: Vec::new(), cap, calls: usize::MAX };
            assert_eq!(q.flush(&mut w, usize::MAX).unwrap(), (Flushed::Empty, want.len()));
            assert_eq!(w.got, want, "cap {cap}");
            assert!(q.is_empty());
        }
    }

    #[test]
    fn stops_when_blocked_or_over_budget() {
        let mut q = queue();
        let mut w = Trickle { got: Vec::new(), cap: 4, calls: 2 };
        assert_eq!(q.flush(&mut w, usize::MAX).unwrap(), (Flushed::Blocked, 8));
        assert_eq!(q.queued(), 23 - 8);
        let mut w = Trickle { got: Vec::new(), cap: 4, calls: 100 };
        assert_eq!(q.flush(&mut w, 6).unwrap(), (Flushed::Budget, 8));
        assert_eq!(w.got, b"a: 1\n\nda");
    }
}
