//! A reader of exactly `size` bytes of a request body (`Content-Length`).
//!
//! astrbot patch P1: 0.12.0 drained an unread remainder in `Drop` with
//! `vec![0; remaining]`, so `Content-Length: 18446744073709551615` was a capacity-overflow
//! panic and 10^12 an allocation abort, on any route, before any handler ran. Here `Drop`
//! reads nothing: it tells the connection the length left unread, and the connection thread
//! skips up to `Limits::drain_limit` of it with a fixed buffer, or closes the connection.
//! Sizes are `u64`, so a length a 32-bit `usize` cannot hold still reads correctly.

use std::io::Read;
use std::io::Result as IoResult;
use std::sync::Arc;

use crate::util::socket::Socket;

pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: u64,
    socket: Option<Arc<Socket>>,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub(crate) fn new(reader: R, size: u64, socket: Option<Arc<Socket>>) -> EqualReader<R> {
        EqualReader { reader, size, socket }
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.size).unwrap_or(usize::MAX).min(buf.len());
        let len = self.reader.read(&mut buf[..want])?;
        self.size -= len as u64;
        Ok(len)
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read,
{
    fn drop(&mut self) {
        if self.size > 0 {
            if let Some(socket) = &self.socket {
                socket.note_unread(self.size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;

    #[test]
    fn test_limit() {
        let mut org_reader = &b"hello world"[..];
        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5, None);
            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }
        assert_eq!(org_reader, &b" world"[..]);
    }

    #[test]
    fn an_unread_remainder_is_left_alone_however_large() {
        // 0.12.0 allocated the whole remainder here: a capacity overflow, then an abort.
        let mut source = &b"abc"[..];
        let mut reader = EqualReader::new(source.by_ref(), u64::MAX, None);
        let mut one = [0u8; 1];
        assert_eq!(reader.read(&mut one).unwrap(), 1);
        drop(reader);
        assert_eq!(source, &b"bc"[..]);
    }
}
