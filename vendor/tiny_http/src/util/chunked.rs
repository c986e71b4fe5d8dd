//! A strict decoder of chunked request bodies (astrbot patch P4).
//!
//! `chunked_transfer::Decoder` 1.5 reads a chunk-size line of any length into memory,
//! accepts `+` and spaces around the size and rejects trailers. Behind a reverse proxy a
//! lenient parser is a request-smuggling shape, so here: the size is 1 to 16 hex digits,
//! an extension (ignored) keeps the line under 4 KiB, every line ends in CRLF, trailer
//! lines are read and dropped within the head limits, and anything else is an
//! `InvalidData` error. A decoder dropped before the last chunk tells the connection its
//! remaining length is unknown, so the connection is closed rather than reused.

use std::io::{self, ErrorKind, Read};
use std::sync::Arc;

use crate::util::socket::{Socket, UNREAD_UNKNOWN};

const MAX_SIZE_LINE: usize = 4096;
const MAX_TRAILER_LINE: usize = 8192;
const MAX_TRAILERS: usize = 64 * 1024;

enum State {
    Size,
    Data(u64),
    DataEnd,
    Done,
}

pub struct ChunkedReader<R: Read> {
    source: R,
    state: State,
    socket: Option<Arc<Socket>>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("invalid chunked body: {what}"))
}

impl<R: Read> ChunkedReader<R> {
    pub(crate) fn new(source: R, socket: Option<Arc<Socket>>) -> Self {
        ChunkedReader { source, state: State::Size, socket }
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        loop {
            match self.source.read(&mut b) {
                Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "chunked body cut short")),
                Ok(_) => return Ok(b[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one CRLF-terminated line of at most `max` bytes (without the CRLF).
    fn line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            match self.byte()? {
                b'\r' => {
                    return match self.byte()? {
                        b'\n' => Ok(line),
                        _ => Err(invalid("CR without LF")),
                    }
                }
                b'\n' => return Err(invalid("LF without CR")),
                b if line.len() >= max => {
                    let _ = b;
                    return Err(invalid("line too long"));
                }
                b => line.push(b),
            }
        }
    }

    fn chunk_size(&mut self) -> io::Result<u64> {
        let line = self.line(MAX_SIZE_LINE)?;
        let digits = match line.iter().position(|&b| b == b';') {
            Some(i) => &line[..i],
            None => &line[..],
        };
        if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(invalid("bad chunk size"));
        }
        let text = std::str::from_utf8(digits).map_err(|_| invalid("bad chunk size"))?;
        u64::from_str_radix(text, 16).map_err(|_| invalid("bad chunk size"))
    }

    fn trailers(&mut self) -> io::Result<()> {
        let mut total = 0usize;
        loop {
            let line = self.line(MAX_TRAILER_LINE)?;
            if line.is_empty() {
                return Ok(());
            }
            total += line.len() + 2;
            if total > MAX_TRAILERS {
                return Err(invalid("trailers too large"));
            }
        }
    }
}

impl<R: Read> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Size => {
                    let size = self.chunk_size()?;
                    if size == 0 {
                        self.trailers()?;
                        self.state = State::Done;
                        return Ok(0);
                    }
                    self.state = State::Data(size);
                }
                State::Data(left) => {
                    let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let n = self.source.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(ErrorKind::UnexpectedEof, "chunked body cut short"));
                    }
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
                    return Ok(n);
                }
                State::DataEnd => {
                    if !self.line(0)?.is_empty() {
                        return Err(invalid("chunk not followed by CRLF"));
                    }
                    self.state = State::Size;
                }
            }
        }
    }
}

impl<R: Read> Drop for ChunkedReader<R> {
    fn drop(&mut self) {
        if !matches!(self.state, State::Done) {
            if let Some(socket) = &self.socket {
                socket.note_unread(UNREAD_UNKNOWN);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkedReader;
    use std::io::Read;

    fn decode(input: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChunkedReader::new(input, None).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        assert_eq!(decode(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").unwrap(), b"hello world");
        assert_eq!(decode(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n").unwrap(), b"abc");
        assert_eq!(decode(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(), b"0123456789");
    }

    #[test]
    fn refuses_lenient_sizes_and_framing() {
        for bad in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"ffffffffffffffffff\r\n",
            b"5\r\nhel",
        ] {
            assert!(decode(bad).is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_size_line_without_end_is_refused_without_growing() {
        let endless = vec![b'0'; 1 << 20];
        assert!(decode(&endless).is_err());
    }
}
