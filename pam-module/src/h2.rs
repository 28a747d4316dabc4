//! A blocking HTTP/2 client for unary gRPC calls over one Unix socket: what
//! pam_otpd needs to ask otpd, and nothing else. No runtime, no thread, no
//! task: one connection per PAM call, one stream per RPC, all on the
//! caller's thread with the socket's own timeouts.
//!
//! The first request goes out in one `write`: the connection preface, this
//! client's SETTINGS and the request's HEADERS and DATA frames. The reply is
//! read frame by frame until its stream ends: SETTINGS are acknowledged,
//! PINGs answered, WINDOW_UPDATE and unknown frames ignored, everything else
//! that is not what a unary gRPC reply can be is a protocol error. The
//! client never announces more than HTTP/2's default limits (16 KiB frames,
//! a 64 KiB window, a 4 KiB HPACK table), so a reply that exceeds them is an
//! error, never a buffer that grows with what the peer sends.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, MsgFlags};

use crate::hpack::{self, Decoder};

/// The HTTP/2 connection preface (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest frame payload this client accepts (SETTINGS_MAX_FRAME_SIZE,
/// never raised from the default).
const MAX_FRAME: usize = 16_384;
/// Largest gRPC reply message; otpd's replies to the PAM module are a few
/// hundred bytes. Also under the initial 64 KiB flow-control window, so the
/// client never needs to send WINDOW_UPDATE.
pub const MAX_REPLY: usize = 32 * 1024;

mod frame {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// What went wrong on the wire.
#[derive(Debug)]
pub enum WireError {
    /// Reading or writing the socket failed (or timed out).
    Io(io::Error),
    /// The peer sent something a unary gRPC reply cannot be.
    Protocol(&'static str),
    /// The deadline passed.
    Timeout,
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::Io(e),
        }
    }
}

impl From<hpack::DecodeError> for WireError {
    fn from(_: hpack::DecodeError) -> Self {
        Self::Protocol("malformed header block")
    }
}

/// A finished unary call: the gRPC status and, with status 0, the message.
#[derive(Debug, Default)]
pub struct Reply {
    /// `grpc-status`.
    pub status: u32,
    /// `grpc-message`, percent-decoded.
    pub message: String,
    /// The reply message (without gRPC's 5-byte prefix).
    pub body: Vec<u8>,
}

/// One HTTP/2 connection.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    /// The next client stream id (odd).
    next_stream: u32,
    started: bool,
    decoder: Decoder,
    /// Read but not yet used.
    buf: Vec<u8>,
    broken: bool,
    /// DATA bytes received and not yet given back to the connection's
    /// flow-control window (sent with the next request): a connection that
    /// serves many calls never runs out of window.
    unacknowledged: u32,
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// `grpc-timeout` for `d`: whole milliseconds, at most 8 digits.
fn grpc_timeout(d: Duration) -> String {
    format!("{}m", d.as_millis().clamp(1, 99_999_999))
}

/// Percent-decodes a `grpc-message` (invalid escapes are kept as they are).
fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%'
            && let Some(h) = v.get(i + 1..i + 3)
            && let Ok(h) = std::str::from_utf8(h)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Strips padding (and the priority fields of HEADERS) from a payload.
fn unpad(payload: &[u8], flags: u8, headers: bool) -> Result<&[u8], WireError> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & flag::PADDED != 0 {
        let (&n, rest) = p.split_first().ok_or(WireError::Protocol("bad padding"))?;
        pad = usize::from(n);
        p = rest;
    }
    if headers && flags & flag::PRIORITY != 0 {
        p = p.get(5..).ok_or(WireError::Protocol("bad priority"))?;
    }
    let end = p
        .len()
        .checked_sub(pad)
        .ok_or(WireError::Protocol("bad padding"))?;
    Ok(&p[..end])
}

impl Connection {
    /// Takes a connected socket; nothing is sent until the first call.
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            next_stream: 1,
            started: false,
            decoder: Decoder::default(),
            buf: Vec::new(),
            broken: false,
            unacknowledged: 0,
        }
    }

    /// Whether an earlier call left the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Calls `path` (e.g. `/otpd.v1.Otpd/Verify`) with the encoded request
    /// `message`; waits for the reply until `deadline`.
    ///
    /// # Errors
    /// See [`WireError`]. The connection is unusable after any error.
    pub fn unary(
        &mut self,
        path: &str,
        message: &[u8],
        deadline: Instant,
    ) -> Result<Reply, WireError> {
        if self.broken {
            return Err(WireError::Protocol("connection already failed"));
        }
        let result = self.unary_inner(path, message, deadline);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn unary_inner(
        &mut self,
        path: &str,
        message: &[u8],
        deadline: Instant,
    ) -> Result<Reply, WireError> {
        let id = self.next_stream;
        self.next_stream = self
            .next_stream
            .checked_add(2)
            .filter(|n| *n < 0x7fff_ffff)
            .ok_or(WireError::Protocol("out of stream ids"))?;
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(WireError::Timeout)?;

        // Holds the code (a Verify request): wiped when dropped, also on
        // an error. Sized so that it never reallocates (which would leave
        // an unwiped copy behind): the frames around the message take
        // under 200 bytes.
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(256 + message.len()));
        let out_vec: &mut Vec<u8> = &mut out;
        if !self.started {
            out_vec.extend_from_slice(PREFACE);
            // SETTINGS: ENABLE_PUSH = 0; the rest stays at the defaults.
            frame_header(out_vec, 6, frame::SETTINGS, 0, 0);
            out_vec.extend_from_slice(&[0, 2, 0, 0, 0, 0]);
            self.started = true;
        }
        if self.unacknowledged > 0 {
            frame_header(out_vec, 4, frame::WINDOW_UPDATE, 0, 0);
            out_vec.extend_from_slice(&self.unacknowledged.to_be_bytes());
            self.unacknowledged = 0;
        }
        let mut block = Vec::with_capacity(128);
        hpack::indexed(&mut block, hpack::index::METHOD_POST);
        hpack::indexed(&mut block, hpack::index::SCHEME_HTTP);
        hpack::literal_indexed_name(&mut block, hpack::index::PATH, path.as_bytes());
        hpack::literal_indexed_name(&mut block, hpack::index::AUTHORITY, b"otpd");
        hpack::literal_indexed_name(&mut block, hpack::index::CONTENT_TYPE, b"application/grpc");
        hpack::literal(&mut block, b"te", b"trailers");
        hpack::literal(&mut block, b"grpc-timeout", grpc_timeout(left).as_bytes());
        hpack::literal_indexed_name(&mut block, hpack::index::USER_AGENT, b"pam_otpd");
        if block.len() > MAX_FRAME {
            return Err(WireError::Protocol("request headers too large"));
        }
        frame_header(out_vec, block.len(), frame::HEADERS, flag::END_HEADERS, id);
        out_vec.extend_from_slice(&block);
        // One DATA frame: gRPC's prefix (not compressed, length) + message.
        let len = u32::try_from(message.len())
            .ok()
            .filter(|_| message.len() + 5 <= MAX_FRAME)
            .ok_or(WireError::Protocol("request too large"))?;
        frame_header(
            out_vec,
            message.len() + 5,
            frame::DATA,
            flag::END_STREAM,
            id,
        );
        out_vec.push(0);
        out_vec.extend_from_slice(&len.to_be_bytes());
        out_vec.extend_from_slice(message);
        self.write(out_vec, deadline)?;
        drop(out);
        self.read_reply(id, deadline)
    }

    fn write(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), WireError> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(WireError::Timeout)?;
        self.stream.set_write_timeout(Some(left))?;
        // send(2) with MSG_NOSIGNAL, never write(2): a peer that went away
        // must be an error here, not a SIGPIPE that kills sshd or sudo.
        let mut rest = bytes;
        while !rest.is_empty() {
            match socket::send(self.stream.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
                Ok(0) => return Err(WireError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
        Ok(())
    }

    /// Reads one frame: (type, flags, stream, payload).
    fn frame(&mut self, deadline: Instant) -> Result<(u8, u8, u32, Vec<u8>), WireError> {
        self.fill(9, deadline)?;
        let len = usize::from(self.buf[0]) << 16
            | usize::from(self.buf[1]) << 8
            | usize::from(self.buf[2]);
        if len > MAX_FRAME {
            return Err(WireError::Protocol("frame larger than allowed"));
        }
        let (kind, flags) = (self.buf[3], self.buf[4]);
        let stream =
            u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) & 0x7fff_ffff;
        self.fill(9 + len, deadline)?;
        let payload = self.buf[9..9 + len].to_vec();
        self.buf.drain(..9 + len);
        Ok((kind, flags, stream, payload))
    }

    /// Reads until `buf` holds at least `n` bytes.
    fn fill(&mut self, n: usize, deadline: Instant) -> Result<(), WireError> {
        let mut chunk = [0u8; 4096];
        while self.buf.len() < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(WireError::Timeout)?;
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(WireError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "otpd closed the connection",
                    )));
                }
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn read_reply(&mut self, id: u32, deadline: Instant) -> Result<Reply, WireError> {
        let mut reply = Reply::default();
        let mut seen_headers = false;
        let mut status: Option<u32> = None;
        let mut data: Vec<u8> = Vec::new();
        // A header block spread over HEADERS + CONTINUATION frames.
        let mut block: Option<(Vec<u8>, bool)> = None;
        loop {
            let (kind, flags, stream, payload) = self.frame(deadline)?;
            if let Some((mut pending, end_stream)) = block.take() {
                if kind != frame::CONTINUATION || stream != id {
                    return Err(WireError::Protocol("header block interrupted"));
                }
                pending.extend_from_slice(&payload);
                if pending.len() > hpack::MAX_HEADER_LIST {
                    return Err(WireError::Protocol("header block too large"));
                }
                if flags & flag::END_HEADERS == 0 {
                    block = Some((pending, end_stream));
                    continue;
                }
                let done = self.headers(
                    &pending,
                    end_stream,
                    &mut seen_headers,
                    &mut status,
                    &mut reply,
                )?;
                if done {
                    break;
                }
                continue;
            }
            match kind {
                frame::SETTINGS if stream == 0 && flags & flag::ACK == 0 => {
                    if payload.len() % 6 != 0 {
                        return Err(WireError::Protocol("bad SETTINGS"));
                    }
                    let mut ack = Vec::with_capacity(9);
                    frame_header(&mut ack, 0, frame::SETTINGS, flag::ACK, 0);
                    self.write(&ack, deadline)?;
                }
                frame::PING if stream == 0 => {
                    if payload.len() != 8 {
                        return Err(WireError::Protocol("bad PING"));
                    }
                    if flags & flag::ACK == 0 {
                        let mut pong = Vec::with_capacity(17);
                        frame_header(&mut pong, 8, frame::PING, flag::ACK, 0);
                        pong.extend_from_slice(&payload);
                        self.write(&pong, deadline)?;
                    }
                }
                frame::GOAWAY if stream == 0 => {
                    let last = payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                        .ok_or(WireError::Protocol("bad GOAWAY"))?;
                    if last < id {
                        return Err(WireError::Io(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "otpd is closing the connection",
                        )));
                    }
                }
                frame::PUSH_PROMISE => return Err(WireError::Protocol("unexpected push")),
                frame::RST_STREAM if stream == id => {
                    return Err(WireError::Io(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "otpd reset the call",
                    )));
                }
                frame::HEADERS if stream == id => {
                    let end_stream = flags & flag::END_STREAM != 0;
                    let fragment = unpad(&payload, flags, true)?.to_vec();
                    if flags & flag::END_HEADERS == 0 {
                        block = Some((fragment, end_stream));
                        continue;
                    }
                    if self.headers(
                        &fragment,
                        end_stream,
                        &mut seen_headers,
                        &mut status,
                        &mut reply,
                    )? {
                        break;
                    }
                }
                frame::HEADERS => {
                    // Another stream's block still updates the HPACK table.
                    if flags & flag::END_HEADERS == 0 {
                        return Err(WireError::Protocol("unexpected header block"));
                    }
                    self.decoder.decode(unpad(&payload, flags, true)?)?;
                }
                frame::DATA if stream == id => {
                    if !seen_headers {
                        return Err(WireError::Protocol("data before headers"));
                    }
                    // The whole payload counts against the window, padding
                    // included (at most 16 KiB a frame).
                    self.unacknowledged = self
                        .unacknowledged
                        .saturating_add(u32::try_from(payload.len()).unwrap_or(u32::MAX));
                    data.extend_from_slice(unpad(&payload, flags, false)?);
                    if data.len() > MAX_REPLY + 5 {
                        return Err(WireError::Protocol("reply too large"));
                    }
                    if flags & flag::END_STREAM != 0 {
                        return Err(WireError::Protocol("reply without trailers"));
                    }
                }
                frame::CONTINUATION => return Err(WireError::Protocol("stray CONTINUATION")),
                // WINDOW_UPDATE, PRIORITY, frames of other streams, unknown
                // types: nothing to do.
                _ => {}
            }
        }
        reply.status = status.ok_or(WireError::Protocol("no grpc-status"))?;
        if reply.status == 0 {
            reply.body = grpc_message(&data)?;
        }
        Ok(reply)
    }

    /// Handles a complete header block of the call's stream; true when the
    /// stream ended with it (trailers, or a trailers-only reply).
    fn headers(
        &mut self,
        block: &[u8],
        end_stream: bool,
        seen_headers: &mut bool,
        status: &mut Option<u32>,
        reply: &mut Reply,
    ) -> Result<bool, WireError> {
        let fields = self.decoder.decode(block)?;
        if !*seen_headers {
            *seen_headers = true;
            let http = fields
                .iter()
                .find(|(n, _)| n == b":status")
                .map(|(_, v)| v.as_slice());
            if http != Some(b"200") {
                return Err(WireError::Protocol("HTTP status is not 200"));
            }
        } else if !end_stream {
            return Err(WireError::Protocol("headers after headers"));
        }
        for (name, value) in &fields {
            match name.as_slice() {
                b"grpc-status" => {
                    let s = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse::<u32>().ok())
                        .ok_or(WireError::Protocol("bad grpc-status"))?;
                    *status = Some(s);
                }
                b"grpc-message" => reply.message = percent_decode(value),
                _ => {}
            }
        }
        Ok(end_stream)
    }
}

/// The one message of a unary reply: gRPC's prefix (compressed flag 0, big
/// endian length), then exactly that many bytes.
fn grpc_message(data: &[u8]) -> Result<Vec<u8>, WireError> {
    let (prefix, rest) = data
        .split_at_checked(5)
        .ok_or(WireError::Protocol("reply without a message"))?;
    if prefix[0] != 0 {
        return Err(WireError::Protocol("compressed reply"));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len != rest.len() {
        return Err(WireError::Protocol("reply length does not match"));
    }
    Ok(rest.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grpc_message_and_timeout_and_percent() {
        assert_eq!(grpc_message(&[0, 0, 0, 0, 2, 7, 8]).unwrap(), [7, 8]);
        assert!(grpc_message(&[0, 0, 0, 0, 3, 7, 8]).is_err());
        assert!(grpc_message(&[1, 0, 0, 0, 0]).is_err());
        assert!(grpc_message(&[0, 0]).is_err());
        assert_eq!(grpc_message(&[0, 0, 0, 0, 0]).unwrap(), Vec::<u8>::new());
        assert_eq!(grpc_timeout(Duration::from_secs(5)), "5000m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(
            percent_decode(b"user %C3%A9 not found%2"),
            "user é not found%2"
        );
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    /// Runs one call against `server` (what the peer sends); returns the
    /// result and what the client wrote.
    fn call(server: &[u8]) -> (Result<Reply, WireError>, Vec<u8>) {
        use std::io::Write;
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(server).unwrap();
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        let mut c = Connection::new(ours);
        let r = c.unary(
            "/otpd.v1.Otpd/Verify",
            b"\x0a\x01a",
            Instant::now() + Duration::from_secs(5),
        );
        drop(c);
        let mut sent = Vec::new();
        // A client that stopped early leaves data unread: a reset here.
        let _ = theirs.read_to_end(&mut sent);
        (r, sent)
    }

    fn headers_200() -> Vec<u8> {
        let mut b = Vec::new();
        hpack::indexed(&mut b, 8);
        hpack::literal(&mut b, b"content-type", b"application/grpc");
        b
    }

    fn trailers(status: &str, message: &str) -> Vec<u8> {
        let mut b = Vec::new();
        hpack::literal(&mut b, b"grpc-status", status.as_bytes());
        if !message.is_empty() {
            hpack::literal(&mut b, b"grpc-message", message.as_bytes());
        }
        b
    }

    #[test]
    fn a_reply_split_over_frames_with_a_ping_between_is_read() {
        let h = headers_200();
        let mut server = frame(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        // The header block in two pieces: HEADERS + CONTINUATION.
        server.extend(frame(frame::HEADERS, 0, 1, &h[..3]));
        server.extend(frame(frame::CONTINUATION, flag::END_HEADERS, 1, &h[3..]));
        server.extend(frame(frame::PING, 0, 0, b"12345678"));
        server.extend(frame(frame::DATA, 0, 1, &[0, 0, 0, 0, 3, 9]));
        server.extend(frame(frame::DATA, flag::PADDED, 1, &[2, 8, 7, 0, 0]));
        server.extend(frame(frame::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        server.extend(frame(
            frame::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &trailers("0", ""),
        ));
        let (r, sent) = call(&server);
        let r = r.unwrap();
        assert_eq!((r.status, r.body), (0, vec![9, 8, 7]));
        // The client sent its preface first, acknowledged the SETTINGS and
        // answered the PING.
        assert!(sent.starts_with(PREFACE));
        let mut ack = Vec::new();
        frame_header(&mut ack, 0, frame::SETTINGS, flag::ACK, 0);
        assert!(sent.windows(ack.len()).any(|w| w == ack));
        let pong = frame(frame::PING, flag::ACK, 0, b"12345678");
        assert!(sent.windows(pong.len()).any(|w| w == pong));
    }

    #[test]
    fn an_error_reply_carries_status_and_message() {
        let mut block = headers_200();
        block.extend(trailers("3", "user%20%22x%22 not enrolled"));
        let server = frame(
            frame::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block,
        );
        let r = call(&server).0.unwrap();
        assert_eq!(r.status, 3);
        assert_eq!(r.message, "user \"x\" not enrolled");
        assert!(r.body.is_empty());
    }

    #[test]
    fn broken_replies_are_errors() {
        let ok_headers = frame(frame::HEADERS, flag::END_HEADERS, 1, &headers_200());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("nothing", Vec::new()),
            ("a frame too large", {
                let mut b = ok_headers.clone();
                b.extend(frame(frame::DATA, 0, 1, &vec![0; MAX_FRAME + 1]));
                b
            }),
            ("no trailers", {
                let mut b = ok_headers.clone();
                b.extend(frame(frame::DATA, flag::END_STREAM, 1, &[0, 0, 0, 0, 0]));
                b
            }),
            ("HTTP 500", {
                let mut h = Vec::new();
                hpack::indexed(&mut h, 14);
                frame(frame::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &h)
            }),
            ("reset", frame(frame::RST_STREAM, 0, 1, &[0, 0, 0, 2])),
            (
                "going away",
                frame(frame::GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]),
            ),
            ("no grpc-status", {
                let mut b = ok_headers.clone();
                b.extend(frame(
                    frame::HEADERS,
                    flag::END_HEADERS | flag::END_STREAM,
                    1,
                    &[],
                ));
                b
            }),
            (
                "garbage block",
                frame(frame::HEADERS, flag::END_HEADERS, 1, &[0xff, 0xff]),
            ),
            (
                "a push",
                frame(frame::PUSH_PROMISE, flag::END_HEADERS, 1, &[0, 0, 0, 2]),
            ),
            (
                "data before headers",
                frame(frame::DATA, 0, 1, &[0, 0, 0, 0, 0]),
            ),
            ("a reply too large", {
                let mut b = ok_headers.clone();
                for _ in 0..3 {
                    b.extend(frame(frame::DATA, 0, 1, &vec![0; MAX_FRAME]));
                }
                b
            }),
        ];
        for (what, server) in cases {
            assert!(call(&server).0.is_err(), "{what}");
        }
    }

    #[test]
    fn padding_is_checked() {
        assert_eq!(unpad(&[2, b'a', 0, 0], flag::PADDED, false).unwrap(), b"a");
        assert!(unpad(&[5, b'a'], flag::PADDED, false).is_err());
        assert!(unpad(&[], flag::PADDED, false).is_err());
        assert_eq!(
            unpad(&[0, 0, 0, 0, 9, b'x'], flag::PRIORITY, true).unwrap(),
            b"x"
        );
        assert!(unpad(&[0, 0], flag::PRIORITY, true).is_err());
    }
}
