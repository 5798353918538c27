//! Framing of PostgreSQL protocol messages (1-byte tag + 4-byte length) over a plain or TLS socket.
//!
//! The reader and writer are deliberately not AsyncRead/AsyncWrite: only whole frames go in and
//! out, so nothing can write stray bytes into the protocol. Buffers start empty and shrink back
//! after large messages, so an idle connection costs little memory.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Buffers larger than this are dropped once empty so idle connections stay small.
const SHRINK_ABOVE: usize = 256 * 1024;
/// Read granularity; also the most a reader reserves at once for a large message.
const READ_CHUNK: usize = 16 * 1024;
/// What an empty reader reserves for its first read.
const FIRST_READ: usize = 2048;

/// Empty buffers let go of by clients waiting between requests, kept for the next client
/// on the same thread to take: a transaction would otherwise take a read and a write buffer
/// from malloc and give them back. A few per thread, and only buffers of the
/// usual size, so memory stays bounded.
struct Spares {
    size: usize,
    free: std::cell::RefCell<Vec<BytesMut>>,
}

const SPARES_PER_THREAD: usize = 32;

thread_local! {
    static SPARE_READS: Spares = const { Spares::new(FIRST_READ) };
    static SPARE_WRITES: Spares = const { Spares::new(FIRST_WRITE) };
}

impl Spares {
    const fn new(size: usize) -> Spares {
        Spares {
            size,
            free: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn take(&self) -> BytesMut {
        let spare = self.free.borrow_mut().pop();
        spare.unwrap_or_else(|| BytesMut::with_capacity(self.size))
    }

    /// Takes `buf` from its connection when it holds nothing and keeps it, unless frames
    /// split from it still share its memory or it grew large.
    fn reclaim(&self, buf: &mut BytesMut) {
        if !buf.is_empty() || buf.capacity() == 0 {
            return;
        }
        let mut buf = std::mem::take(buf);
        if buf.try_reclaim(self.size) && buf.capacity() <= 2 * self.size {
            let mut free = self.free.borrow_mut();
            if free.len() < SPARES_PER_THREAD {
                free.push(buf);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Eof,
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(u64),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One complete protocol message: tag, length and body, exactly as on the wire.
#[derive(Clone, Debug)]
pub struct Frame(Bytes);

impl Frame {
    /// A message made by pgward: `tag`, then the body `body` writes, with its length.
    pub fn build(tag: u8, body: impl FnOnce(&mut bytes::BytesMut)) -> Frame {
        let mut buf = bytes::BytesMut::new();
        super::messages::frontend(&mut buf, tag, body);
        Frame(buf.freeze())
    }

    /// A copy of this message that does not keep the read buffer it was cut from alive, for
    /// a message kept past its request (a client idle for hours would hold that buffer).
    pub fn detached(&self) -> Frame {
        Frame(Bytes::copy_from_slice(&self.0))
    }

    /// A whole message already encoded (tag, length, body).
    pub fn from_bytes(bytes: bytes::Bytes) -> Frame {
        debug_assert!(bytes.len() >= 5);
        Frame(bytes)
    }

    #[inline]
    pub fn tag(&self) -> u8 {
        self.view().tag()
    }
    /// The message body after tag and length.
    #[inline]
    pub fn body(&self) -> &[u8] {
        self.view().body()
    }
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// This message, borrowed.
    #[inline]
    pub fn view(&self) -> FrameRef<'_> {
        FrameRef(&self.0)
    }
}

/// One complete message, borrowed: from a reader's buffer (see `FrameReader::take_buffered`)
/// or from a `Frame`. The relay of server messages handles them in place, instead of
/// splitting each off its read buffer as a `Frame` (a reference count taken and dropped).
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a>(&'a [u8]);

impl<'a> FrameRef<'a> {
    #[inline]
    pub fn tag(self) -> u8 {
        self.0[0]
    }
    /// The message body after tag and length.
    #[inline]
    pub fn body(self) -> &'a [u8] {
        &self.0[5..]
    }
    #[inline]
    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }
}

/// A client or server socket, before it is split into halves.
pub enum Stream {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Splits into framed halves; plain TCP uses lock-free owned halves (the hot path).
    pub fn into_framed(self, max_message: u64) -> (FrameReader, FrameWriter) {
        let (r, w): (ReadIo, WriteIo) = match self {
            Stream::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (ReadIo::Tcp(r), WriteIo::Tcp(w))
            }
            Stream::ServerTls(tls) => {
                let (r, w) = tokio::io::split(Box::new(*tls) as Box<dyn AsyncStream>);
                (ReadIo::Other(r), WriteIo::Other(w))
            }
            Stream::ClientTls(tls) => {
                let (r, w) = tokio::io::split(Box::new(*tls) as Box<dyn AsyncStream>);
                (ReadIo::Other(r), WriteIo::Other(w))
            }
        };
        (
            FrameReader {
                io: r,
                buf: BytesMut::new(),
                max_message,
            },
            FrameWriter {
                io: w,
                buf: BytesMut::new(),
            },
        )
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }
}

/// Used unsplit during startup, before TLS is settled and the stream is framed.
impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

enum ReadIo {
    Tcp(OwnedReadHalf),
    Other(tokio::io::ReadHalf<Box<dyn AsyncStream>>),
}

enum WriteIo {
    Tcp(OwnedWriteHalf),
    Other(tokio::io::WriteHalf<Box<dyn AsyncStream>>),
}

impl AsyncRead for ReadIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadIo::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadIo::Other(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteIo::Tcp(w) => Pin::new(w).poll_write(cx, data),
            WriteIo::Other(w) => Pin::new(w).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteIo::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteIo::Other(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteIo::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteIo::Other(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Most requests are small: an empty buffer starts small, and grows by READ_CHUNK when
/// what comes is not.
fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        *buf = SPARE_READS.with(Spares::take);
    } else if buf.capacity() - buf.len() < FIRST_READ / 2 {
        buf.reserve(READ_CHUNK);
    }
}

/// One read from a plain socket into `buf`'s spare capacity, once the socket has been
/// polled readable. A read that leaves part of it unfilled has drained the socket, so
/// readiness is cleared with it: tokio would otherwise learn that from one more recv failing
/// with EAGAIN, a system call per request. No wake-up is lost: readiness that arrives after
/// the read comes with a newer tick, which `try_io` does not clear.
fn poll_read_tcp(
    stream: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        let mut read = 0;
        let result = stream.try_io(Interest::READABLE, || {
            let spare = buf.spare_capacity_mut();
            let room = spare.len();
            let n = socket2::SockRef::from(stream).recv(spare)?;
            // SAFETY: recv initialised the first n bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            read = n;
            if n > 0 && n < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match result {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if read > 0 {
                    return Poll::Ready(Ok(read));
                }
                // Nothing after all (readiness was stale): wait for the next event.
                ready!(stream.poll_read_ready(cx))?;
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// The total length (tag included) of the message `buf` begins with, once its header is
/// there, whether or not the rest is.
#[inline]
fn frame_length(buf: &[u8], max_message: u64) -> Result<Option<usize>, FrameError> {
    let Some(&[_, a, b, c, d]) = buf.first_chunk::<5>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    if len < 4 {
        return Err(FrameError::BadLength(len as i64));
    }
    if len as u64 > max_message {
        return Err(FrameError::TooLarge(len as u64));
    }
    Ok(Some(1 + len as usize))
}

/// A reader's buffered bytes, taken out of it (`FrameReader::take_buffered`).
pub struct Buffered {
    buf: BytesMut,
    /// How much of `buf` the messages handled so far took.
    used: usize,
    max_message: u64,
}

impl Buffered {
    /// The next complete message, borrowed; None when the rest is incomplete.
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<FrameRef<'_>>, FrameError> {
        let rest = &self.buf[self.used..];
        match frame_length(rest, self.max_message)? {
            Some(total) if total <= rest.len() => {
                self.used += total;
                Ok(Some(FrameRef(&rest[..total])))
            }
            _ => Ok(None),
        }
    }
}

/// Reads whole frames; bytes of the next frames stay buffered.
pub struct FrameReader {
    io: ReadIo,
    buf: BytesMut,
    max_message: u64,
}

impl FrameReader {
    /// A complete frame already in the buffer, if any.
    pub fn try_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(total) = self.complete_at_head()? else {
            return Ok(None);
        };
        let frame = Frame(self.buf.split_to(total).freeze());
        self.shrink_if_empty();
        Ok(Some(frame))
    }

    /// The length of the complete frame at the head of the buffer, if there is one; when
    /// there is only part of one, room is reserved for the rest.
    fn complete_at_head(&mut self) -> Result<Option<usize>, FrameError> {
        let total = match frame_length(&self.buf, self.max_message)? {
            Some(total) if total <= self.buf.len() => return Ok(Some(total)),
            Some(total) => total,
            None => return Ok(None),
        };
        // Reserve what is missing, in bounded steps: a length is a claim, not a fact.
        self.buf
            .reserve((total - self.buf.len()).min(READ_CHUNK * 64));
        Ok(None)
    }

    fn shrink_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
            self.buf = BytesMut::new();
        }
    }

    /// Takes the bytes read and not yet handled out of the reader, to handle the complete
    /// messages among them in place (`next_frame`) while the reader's owner is borrowed
    /// mutably; `put_back` returns them.
    pub fn take_buffered(&mut self) -> Buffered {
        Buffered {
            buf: std::mem::take(&mut self.buf),
            used: 0,
            max_message: self.max_message,
        }
    }

    /// Returns what `take_buffered` took, less the messages handled.
    pub fn put_back(&mut self, buffered: Buffered) {
        let Buffered { mut buf, used, .. } = buffered;
        buf.advance(used);
        self.buf = buf;
        self.shrink_if_empty();
        // Room for the rest of a message the buffer holds part of.
        let _ = self.complete_at_head();
    }

    /// Reads more bytes from the socket. Cancel-safe (usable in `select!`). The waits are
    /// poll functions, so the future holds nothing but the reader (memory per idle client,
    /// and less to move per poll).
    pub fn fill(&mut self) -> impl std::future::Future<Output = Result<(), FrameError>> + '_ {
        std::future::poll_fn(move |cx| self.poll_fill(cx))
    }

    ///
    /// A plain socket takes a buffer only once it is readable; the buffer stays through the
    /// waits of a request (see `release_idle`).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FrameError>> {
        let Self { io, buf, .. } = self;
        let read = match io {
            ReadIo::Tcp(r) => match r.as_ref().poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {
                    reserve_for_read(buf);
                    poll_read_tcp(r.as_ref(), buf, cx)
                }
                waiting => waiting.map_ok(|()| 0),
            },
            ReadIo::Other(_) => {
                reserve_for_read(buf);
                tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
            }
        };
        match ready!(read)? {
            0 => Poll::Ready(Err(FrameError::Eof)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Lets go of the buffer if it holds nothing, for a client waiting between requests
    /// (memory per idle client). Server connections keep theirs: there are few of them, and
    /// giving a buffer back and taking it again at every wait costs more than it saves.
    pub fn release_idle(&mut self) {
        SPARE_READS.with(|spares| spares.reclaim(&mut self.buf));
    }

    pub async fn read_frame(&mut self) -> Result<Frame, FrameError> {
        loop {
            if let Some(frame) = self.try_frame()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// True when the peer has closed or sent something while we expected silence (an idle
    /// pooled connection). Never blocks.
    pub fn is_closed_or_chatty(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut scratch = [0u8; 64];
        match &self.io {
            // Asks tokio's readiness, and the socket only when that says readable: no system
            // call for a quiet connection, and no waker left in place of its next owner's.
            ReadIo::Tcp(r) => {
                !matches!(r.try_read(&mut scratch), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            ReadIo::Other(_) => {
                let mut rb = ReadBuf::new(&mut scratch);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                Pin::new(&mut self.io)
                    .poll_read(&mut cx, &mut rb)
                    .is_ready()
            }
        }
    }
}

/// Collects outgoing frames and writes them in batches.
pub struct FrameWriter {
    io: WriteIo,
    buf: BytesMut,
}

/// What a writer without a buffer takes at once (one allocation for a typical reply,
/// instead of growing from nothing).
const FIRST_WRITE: usize = 4096;

impl FrameWriter {
    #[inline]
    pub fn queue(&mut self, bytes: &[u8]) {
        self.buffer().extend_from_slice(bytes);
    }

    /// Gives encoders direct access to the output buffer.
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() == 0 {
            self.buf = SPARE_WRITES.with(Spares::take);
        }
        &mut self.buf
    }

    #[inline]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// What is queued and not yet written.
    #[inline]
    pub fn queued(&self) -> &[u8] {
        &self.buf
    }

    /// One write call; flushes the transport once the buffer is empty. Cancel-safe.
    pub fn write_some(&mut self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        std::future::poll_fn(move |cx| self.poll_write_some(cx))
    }

    pub fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.advance(n);
        }
        if self.buf.is_empty() {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf = BytesMut::new();
            }
        }
        Poll::Ready(Ok(()))
    }

    pub fn flush(&mut self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        std::future::poll_fn(move |cx| self.poll_flush(cx))
    }

    /// Writes everything queued and flushes the transport.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            ready!(self.poll_write_some(cx))?;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Lets go of the buffer once everything is written (a client waiting between requests
    /// holds none; see `FrameReader::poll_fill`).
    pub fn release_idle(&mut self) {
        SPARE_WRITES.with(|spares| spares.reclaim(&mut self.buf));
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A reader on one end of a loopback connection, and the other end to write to.
    async fn reader_and_peer() -> (FrameReader, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let (reader, _) = Stream::Plain(ours).into_framed(1 << 20);
        (reader, peer)
    }

    async fn send(reader: &mut FrameReader, peer: &mut TcpStream, bytes: &[u8]) {
        let want = reader.buf.len() + bytes.len();
        peer.write_all(bytes).await.unwrap();
        while reader.buf.len() < want {
            reader.fill().await.unwrap();
        }
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Whether `reader` turns out closed or chatty within a few seconds, the runtime's I/O
    /// driver running in between (as it does between a pooled connection's leases).
    async fn becomes_unusable(reader: &mut FrameReader) -> bool {
        for _ in 0..500 {
            if reader.is_closed_or_chatty() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_idle_connection_is_unusable_once_its_peer_speaks_or_closes() {
        let (mut quiet, _peer) = reader_and_peer().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!quiet.is_closed_or_chatty());

        let (mut chatty, mut peer) = reader_and_peer().await;
        // A read that waited, as a pooled connection's last one did.
        send(&mut chatty, &mut peer, &message(b'Z', b"I")).await;
        chatty.try_frame().unwrap().unwrap();
        assert!(!chatty.is_closed_or_chatty());
        peer.write_all(&message(b'N', b"notice")).await.unwrap();
        assert!(becomes_unusable(&mut chatty).await);

        let (mut closed, peer) = reader_and_peer().await;
        drop(peer);
        assert!(becomes_unusable(&mut closed).await);
    }

    #[tokio::test]
    async fn messages_read_in_place_come_whole_and_the_rest_waits() {
        let (mut reader, mut peer) = reader_and_peer().await;
        let ready = message(b'Z', b"I");
        let row = message(b'D', b"\0\x01\0\0\0\x0312345");
        let mut first = ready.clone();
        first.extend_from_slice(&row[..3]);
        send(&mut reader, &mut peer, &first).await;

        let mut buffered = reader.take_buffered();
        assert_eq!(
            buffered.next_frame().unwrap().unwrap().as_bytes(),
            &ready[..]
        );
        assert!(buffered.next_frame().unwrap().is_none());
        reader.put_back(buffered);
        assert_eq!(reader.buf.as_ref(), &row[..3]);

        send(&mut reader, &mut peer, &row[3..]).await;
        let mut buffered = reader.take_buffered();
        let frame = buffered.next_frame().unwrap().unwrap();
        assert_eq!((frame.tag(), frame.body()), (b'D', &row[5..]));
        assert!(buffered.next_frame().unwrap().is_none());
        reader.put_back(buffered);
        assert!(reader.buf.is_empty());
    }

    #[tokio::test]
    async fn messages_not_handled_in_place_stay_for_the_next_read() {
        let (mut reader, mut peer) = reader_and_peer().await;
        let (one, two) = (message(b'1', b""), message(b'C', b"SELECT 1\0"));
        send(&mut reader, &mut peer, &[one.clone(), two.clone()].concat()).await;

        let mut buffered = reader.take_buffered();
        assert_eq!(buffered.next_frame().unwrap().unwrap().as_bytes(), &one[..]);
        reader.put_back(buffered);
        let frame = reader.try_frame().unwrap().unwrap();
        assert_eq!(frame.as_bytes(), &two[..]);
        assert!(reader.try_frame().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_length_below_four_is_refused() {
        let (mut reader, mut peer) = reader_and_peer().await;
        send(&mut reader, &mut peer, &[b'Z', 0, 0, 0, 3, b'I']).await;
        let mut buffered = reader.take_buffered();
        assert!(matches!(
            buffered.next_frame(),
            Err(FrameError::BadLength(3))
        ));
    }
}
