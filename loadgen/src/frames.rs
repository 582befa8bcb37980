//! Read buffers and in-place WebSocket frame splitting for the hot path.
//!
//! The codec's `ws::Decoder` hands out each message as its own `BytesMut`;
//! at millions of frames per second the reference counting shows. Here a
//! connection reads into one flat buffer, frames are found with the codec's
//! `parse_frame_header`, unmasked in place with its `unmask`, and handed out
//! as ranges into that buffer. Fragmented messages (which BTP peers do not
//! send, but may) are reassembled in a side buffer.

use ilpd_codec::ws::{self, Opcode, Role};
use std::io::Read;
use std::ops::Range;

/// A flat read buffer: bytes `start..end` are unread.
pub struct ReadBuf {
    pub data: Vec<u8>,
    pub start: usize,
    pub end: usize,
}

impl ReadBuf {
    pub fn new(capacity: usize) -> ReadBuf {
        ReadBuf {
            data: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// A buffer holding `initial` (bytes read during a handshake).
    pub fn with_initial(capacity: usize, initial: &[u8]) -> ReadBuf {
        let mut b = ReadBuf::new(capacity.max(initial.len() * 2));
        b.data[..initial.len()].copy_from_slice(initial);
        b.end = initial.len();
        b
    }

    #[inline]
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// One `read` into the free space (moving unread bytes to the front
    /// first when the tail is short). `Ok(0)` means EOF.
    pub fn read_from(&mut self, r: &mut impl Read) -> std::io::Result<usize> {
        if self.data.len() - self.end < self.data.len() / 4 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.data.len() {
                // A message bigger than the buffer: grow (bounded by the
                // frame size limit checked by the caller).
                let n = self.data.len() * 2;
                self.data.resize(n, 0);
            }
        }
        let n = r.read(&mut self.data[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

/// One complete message found in the buffer.
pub enum Frame {
    /// A data or control frame in place: `data[range]`.
    InPlace { opcode: Opcode, range: Range<usize> },
    /// A reassembled fragmented message (in the connection's side buffer).
    Reassembled { opcode: Opcode },
}

/// Splits frames off a [`ReadBuf`] for one connection.
pub struct FrameSplitter {
    role: Role,
    max_message: usize,
    partial: Option<(Opcode, Vec<u8>)>,
    /// The last reassembled message.
    pub assembled: Vec<u8>,
}

impl FrameSplitter {
    pub fn new(role: Role, max_message: usize) -> FrameSplitter {
        FrameSplitter {
            role,
            max_message,
            partial: None,
            assembled: Vec::new(),
        }
    }

    /// The next complete message, or `Ok(None)` when more bytes are needed.
    /// RFC 6455 §5.1: a server refuses unmasked frames, a client masked ones.
    pub fn next(&mut self, rb: &mut ReadBuf) -> Result<Option<Frame>, String> {
        loop {
            let h = match ws::parse_frame_header(rb.pending()) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(e) => return Err(format!("bad WebSocket frame header ({e})")),
            };
            match (self.role, h.mask.is_some()) {
                (Role::Server, false) => return Err("unmasked WebSocket frame from client".into()),
                (Role::Client, true) => return Err("masked WebSocket frame from server".into()),
                _ => {}
            }
            if h.payload_len > self.max_message as u64 {
                return Err(format!(
                    "WebSocket message of {} bytes over the {} limit",
                    h.payload_len, self.max_message
                ));
            }
            let total = h.header_len + h.payload_len as usize;
            if rb.end - rb.start < total {
                // Make sure the buffer can hold the whole frame.
                if rb.data.len() < total * 2 {
                    let n = (total * 2).max(rb.data.len());
                    rb.data.resize(n, 0);
                }
                return Ok(None);
            }
            let range = rb.start + h.header_len..rb.start + total;
            if let Some(key) = h.mask {
                if key != [0; 4] {
                    ws::unmask(&mut rb.data[range.clone()], key);
                }
            }
            // Do not reset the buffer yet: the caller reads `range` first.
            rb.start += total;
            match h.opcode {
                Opcode::Continuation => {
                    let Some((op, mut acc)) = self.partial.take() else {
                        return Err("WebSocket continuation without a first frame".into());
                    };
                    acc.extend_from_slice(&rb.data[range]);
                    if acc.len() > self.max_message {
                        return Err("fragmented WebSocket message over the limit".into());
                    }
                    if h.fin {
                        self.assembled = acc;
                        return Ok(Some(Frame::Reassembled { opcode: op }));
                    }
                    self.partial = Some((op, acc));
                }
                Opcode::Binary | Opcode::Text if !h.fin => {
                    if self.partial.is_some() {
                        return Err("WebSocket data frame inside a fragmented message".into());
                    }
                    self.partial = Some((h.opcode, rb.data[range].to_vec()));
                }
                op => return Ok(Some(Frame::InPlace { opcode: op, range })),
            }
        }
    }
}

/// Call after handling the frames of one read: drops the consumed bytes.
#[inline]
pub fn settle(rb: &mut ReadBuf) {
    if rb.start == rb.end {
        rb.start = 0;
        rb.end = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn splits_masked_unmasked_and_fragmented_frames() {
        let mut wire = BytesMut::new();
        ws::write_frame(&mut wire, Opcode::Binary, b"hello", Some([1, 2, 3, 4]));
        ws::write_frame(&mut wire, Opcode::Binary, b"zero", Some([0; 4]));
        ws::write_fragment(&mut wire, false, Opcode::Binary, b"ab", Some([9, 9, 9, 9]));
        ws::write_fragment(
            &mut wire,
            true,
            Opcode::Continuation,
            b"cd",
            Some([7, 7, 7, 7]),
        );
        let mut rb = ReadBuf::new(16);
        let mut sp = FrameSplitter::new(Role::Server, 1000);
        let mut src = &wire[..];
        let mut got: Vec<Vec<u8>> = Vec::new();
        loop {
            match sp.next(&mut rb).unwrap() {
                Some(Frame::InPlace { range, .. }) => got.push(rb.data[range].to_vec()),
                Some(Frame::Reassembled { .. }) => got.push(sp.assembled.clone()),
                None => {
                    settle(&mut rb);
                    if rb.read_from(&mut src).unwrap() == 0 {
                        break;
                    }
                }
            }
        }
        assert_eq!(
            got,
            vec![b"hello".to_vec(), b"zero".to_vec(), b"abcd".to_vec()]
        );
        // A client refuses masked frames.
        let mut rb = ReadBuf::with_initial(64, &wire);
        assert!(FrameSplitter::new(Role::Client, 1000)
            .next(&mut rb)
            .is_err());
    }
}
