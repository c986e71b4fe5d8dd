use std::io::Result as IoResult;
use std::io::{Read, Write};

use std::sync::mpsc::channel;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use std::mem;

pub struct SequentialReaderBuilder<R>
where
    R: Read + Send,
{
    inner: SequentialReaderBuilderInner<R>,
}

enum SequentialReaderBuilderInner<R>
where
    R: Read + Send,
{
    First(R),
    NotFirst(Receiver<R>),
}

pub struct SequentialReader<R>
where
    R: Read + Send,
{
    inner: SequentialReaderInner<R>,
    next: Sender<R>,
}

enum SequentialReaderInner<R>
where
    R: Read + Send,
{
    MyTurn(R),
    Waiting(Receiver<R>),
    Empty,
}

pub struct SequentialWriterBuilder<W>
where
    W: Write + Send,
{
    writer: Arc<Mutex<W>>,
    next_trigger: Option<Receiver<()>>,
}

pub struct SequentialWriter<W>
where
    W: Write + Send,
{
    trigger: Option<Receiver<()>>,
    writer: Arc<Mutex<W>>,
    on_finish: Sender<()>,
}

impl<R: Read + Send> SequentialReaderBuilder<R> {
    pub fn new(reader: R) -> SequentialReaderBuilder<R> {
        SequentialReaderBuilder { inner: SequentialReaderBuilderInner::First(reader) }
    }

    /// The reader of the next request (the iterator never ends).
    pub fn next_reader(&mut self) -> SequentialReader<R> {
        let (tx, rx) = channel();
        let inner = mem::replace(&mut self.inner, SequentialReaderBuilderInner::NotFirst(rx));
        SequentialReader {
            inner: match inner {
                SequentialReaderBuilderInner::First(reader) => SequentialReaderInner::MyTurn(reader),
                SequentialReaderBuilderInner::NotFirst(previous) => SequentialReaderInner::Waiting(previous),
            },
            next: tx,
        }
    }
}

impl<W: Write + Send> SequentialWriterBuilder<W> {
    pub fn new(writer: W) -> SequentialWriterBuilder<W> {
        SequentialWriterBuilder { writer: Arc::new(Mutex::new(writer)), next_trigger: None }
    }

    /// The writer of the next response (the iterator never ends).
    pub fn next_writer(&mut self) -> SequentialWriter<W> {
        let (tx, rx) = channel();
        SequentialWriter {
            trigger: self.next_trigger.replace(rx),
            writer: self.writer.clone(),
            on_finish: tx,
        }
    }
}

impl<R: Read + Send> Iterator for SequentialReaderBuilder<R> {
    type Item = SequentialReader<R>;

    fn next(&mut self) -> Option<SequentialReader<R>> {
        Some(self.next_reader())
    }
}

impl<W: Write + Send> Iterator for SequentialWriterBuilder<W> {
    type Item = SequentialWriter<W>;
    fn next(&mut self) -> Option<SequentialWriter<W>> {
        Some(self.next_writer())
    }
}

impl<R: Read + Send> SequentialReader<R> {
    /// Blocks until the earlier reader has passed the stream on, without reading from it
    /// (astrbot patch P1: the connection thread then skips an unread body).
    pub fn wait_turn(&mut self) {
        if let SequentialReaderInner::Waiting(ref recv) = self.inner {
            self.inner = match recv.recv() {
                Ok(reader) => SequentialReaderInner::MyTurn(reader),
                Err(_) => SequentialReaderInner::Empty,
            };
        }
    }
}

impl<R: Read + Send> Read for SequentialReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        let mut reader = match self.inner {
            SequentialReaderInner::MyTurn(ref mut reader) => return reader.read(buf),
            SequentialReaderInner::Waiting(ref mut recv) => match recv.recv() {
                Ok(reader) => reader,
                // The earlier reader vanished without passing the stream on: end of stream.
                Err(_) => return Ok(0),
            },
            SequentialReaderInner::Empty => return Ok(0),
        };

        let result = reader.read(buf);
        self.inner = SequentialReaderInner::MyTurn(reader);
        result
    }
}

impl<W: Write + Send> SequentialWriter<W> {
    /// Blocks until every earlier response on the connection is complete (astrbot patch
    /// P6: a connection parses its next request only then, so it never has more than one
    /// request waiting for the application).
    pub fn wait_turn(&mut self) {
        if let Some(v) = self.trigger.take() {
            // An error means the earlier writer is gone, which is also its end.
            let _ = v.recv();
        }
    }
}

impl<W: Write + Send> Write for SequentialWriter<W> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.wait_turn();
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.wait_turn();
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl<R> Drop for SequentialReader<R>
where
    R: Read + Send,
{
    fn drop(&mut self) {
        let inner = mem::replace(&mut self.inner, SequentialReaderInner::Empty);

        match inner {
            SequentialReaderInner::MyTurn(reader) => {
                self.next.send(reader).ok();
            }
            SequentialReaderInner::Waiting(recv) => {
                if let Ok(reader) = recv.recv() {
                    self.next.send(reader).ok();
                }
            }
            SequentialReaderInner::Empty => (),
        }
    }
}

impl<W> Drop for SequentialWriter<W>
where
    W: Write + Send,
{
    fn drop(&mut self) {
        self.on_finish.send(()).ok();
    }
}
