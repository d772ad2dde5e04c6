//! Where a SIP message ends (RFC 3261 sections 7.5 and 18.3).
//!
//! The header section ends at the first empty line. The body is exactly Content-Length bytes,
//! framed by count (never by scanning, since bodies may contain NUL or CRLF CRLF). Over UDP a
//! missing Content-Length means "the rest of the datagram", octets past the body are discarded,
//! and a datagram that ends on a line end without the empty line is read as a message without a
//! body (the datagram's end says where it stops); over TCP the empty line and Content-Length are
//! mandatory and the next message starts right after.

use std::fmt;

/// The largest message accepted, header section and body together.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why bytes cannot be framed as a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// No empty line ends the header section (within the datagram, or within the size limit).
    Unterminated,
    /// A Content-Length value is not a decimal number (e.g. negative).
    BadContentLength(String),
    /// Several Content-Length fields disagree.
    ConflictingContentLength,
    /// Content-Length claims more body than the datagram carries.
    Truncated {
        /// The declared length.
        declared: usize,
        /// The bytes present.
        present: usize,
    },
    /// A stream message has no Content-Length (mandatory over TCP).
    MissingContentLength,
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    TooLarge,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Unterminated => f.write_str("the header section does not end"),
            FrameError::BadContentLength(v) => write!(f, "Content-Length {v:?} is not a number"),
            FrameError::ConflictingContentLength => {
                f.write_str("several Content-Length values disagree")
            }
            FrameError::Truncated { declared, present } => write!(
                f,
                "Content-Length is {declared} but only {present} bytes of body arrived"
            ),
            FrameError::MissingContentLength => f.write_str("Content-Length is required"),
            FrameError::TooLarge => write!(f, "messages are limited to {MAX_MESSAGE_BYTES} bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A framed message: where its header section and body are in the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Bytes of the start line and header fields, up to (not including) the empty line.
    pub head_len: usize,
    /// Where the body starts.
    pub body_start: usize,
    /// The body length.
    pub body_len: usize,
}

impl Frame {
    /// The whole message's length (trailing datagram octets excluded).
    pub fn len(&self) -> usize {
        self.body_start + self.body_len
    }

    /// Whether the message is empty (never true for a framed message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The offset of the empty line ending the header section, and the offset after it. Lines end
/// with CRLF; a bare LF is accepted too (RFC 3261 section 7 allows a liberal reader).
fn end_of_head(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let rest = &bytes[i + 1..];
            if rest.starts_with(b"\r\n") {
                return Some((i + 1, i + 3));
            }
            if rest.starts_with(b"\n") {
                return Some((i + 1, i + 2));
            }
        }
        i += 1;
    }
    None
}

/// The Content-Length of a header section, if any: every `Content-Length` or compact `l` field
/// (white space before the colon allowed), which must all agree.
fn content_length(head: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut found: Option<usize> = None;
    let text = String::from_utf8_lossy(head);
    for line in text.split('\n').skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let name = name.trim_end();
        if !(name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")) {
            continue;
        }
        let value = value.trim();
        let digits_ok =
            !value.is_empty() && value.len() <= 9 && value.bytes().all(|b| b.is_ascii_digit());
        let length = value
            .parse::<usize>()
            .ok()
            .filter(|_| digits_ok)
            .ok_or_else(|| FrameError::BadContentLength(value.to_owned()))?;
        match found {
            Some(previous) if previous != length => {
                return Err(FrameError::ConflictingContentLength);
            }
            _ => found = Some(length),
        }
    }
    Ok(found)
}

/// Frames one UDP datagram.
pub fn frame_datagram(datagram: &[u8]) -> Result<Frame, FrameError> {
    if datagram.len() > MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge);
    }
    let (head_len, body_start) = match end_of_head(datagram) {
        Some(ends) => ends,
        None if datagram.ends_with(b"\n") => (datagram.len(), datagram.len()),
        None => return Err(FrameError::Unterminated),
    };
    let present = datagram.len() - body_start;
    let head = &datagram[..head_len];
    let body_len = match content_length(head)? {
        Some(declared) if declared > present => {
            return Err(FrameError::Truncated { declared, present });
        }
        Some(declared) => declared,
        None => present,
    };
    Ok(Frame {
        head_len,
        body_start,
        body_len,
    })
}

/// The keep-alive ping of a stream: a double CRLF between messages (RFC 5626 section 4.4.1),
/// answered by [`PONG`].
const PING: &[u8] = b"\r\n\r\n";
/// The answer to a [`PING`].
pub const PONG: &[u8] = b"\r\n";

/// The line ends at the start of a stream buffer, before its next message: how many bytes to
/// skip (RFC 3261 section 7.5 has them ignored) and how many keep-alive pings they hold. A
/// buffer holding nothing else keeps the start of a ping that has not fully arrived.
fn leading_keepalives(buffer: &[u8]) -> (usize, usize) {
    let run = buffer
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let (mut at, mut pings, mut after_last_ping) = (0, 0, 0);
    while at < run {
        if buffer[at..run].starts_with(PING) {
            pings += 1;
            at += PING.len();
            after_last_ping = at;
        } else {
            at += 1;
        }
    }
    let rest = &buffer[after_last_ping..];
    if run == buffer.len() && PING.starts_with(rest) {
        (after_last_ping, pings)
    } else {
        (run, pings)
    }
}

/// Frames the first message in a TCP stream buffer: `Ok(None)` when more bytes are needed.
fn frame_stream(buffer: &[u8]) -> Result<Option<Frame>, FrameError> {
    let Some((head_len, body_start)) = end_of_head(buffer) else {
        return if buffer.len() > MAX_MESSAGE_BYTES {
            Err(FrameError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let body_len = content_length(&buffer[..head_len])?.ok_or(FrameError::MissingContentLength)?;
    if body_start + body_len > MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge);
    }
    if buffer.len() < body_start + body_len {
        return Ok(None);
    }
    Ok(Some(Frame {
        head_len,
        body_start,
        body_len,
    }))
}

/// Cuts a stream (TCP) into messages, however its bytes are split across reads.
#[derive(Debug, Default)]
pub struct StreamReader {
    buffer: Vec<u8>,
}

/// What the bytes of one read completed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The messages, in order.
    pub messages: Vec<Vec<u8>>,
    /// The keep-alive pings among them, each to be answered with [`PONG`].
    pub pings: usize,
    /// Why the stream cannot go on after these messages: it cannot be framed, and so not
    /// resynchronised either.
    pub error: Option<FrameError>,
}

impl StreamReader {
    /// Takes the bytes of one read and returns what they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Received {
        self.buffer.extend_from_slice(bytes);
        let mut received = Received::default();
        loop {
            let (skip, pings) = leading_keepalives(&self.buffer);
            self.buffer.drain(..skip);
            received.pings += pings;
            match frame_stream(&self.buffer) {
                Ok(Some(frame)) => received
                    .messages
                    .push(self.buffer.drain(..frame.len()).collect()),
                Ok(None) => return received,
                Err(error) => {
                    received.error = Some(error);
                    return received;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn datagrams_are_framed_by_content_length_and_extra_octets_ignored() {
        let frame = frame_datagram(OPTIONS).expect("framed");
        assert_eq!(&OPTIONS[frame.body_start..frame.len()], b"body");
    }

    #[test]
    fn datagrams_without_content_length_take_the_rest() {
        let frame = frame_datagram(b"OPTIONS sip:a@b SIP/2.0\r\n\r\nall of it").expect("framed");
        assert_eq!(frame.body_len, 9);
    }

    #[test]
    fn a_datagram_ending_on_a_line_end_is_a_message_without_body() {
        let datagram = b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n";
        let frame = frame_datagram(datagram).expect("framed");
        assert_eq!((frame.head_len, frame.body_len), (datagram.len(), 0));
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(matches!(
            frame_datagram(b"X sip:a SIP/2.0\r\nContent-Length: -999\r\n\r\n"),
            Err(FrameError::BadContentLength(_))
        ));
        assert_eq!(
            frame_datagram(b"X sip:a SIP/2.0\r\nContent-Length: 5\r\nl: 6\r\n\r\n123456"),
            Err(FrameError::ConflictingContentLength)
        );
        assert_eq!(
            frame_datagram(b"X sip:a SIP/2.0\r\nContent-Length   : 10\r\n\r\n123"),
            Err(FrameError::Truncated {
                declared: 10,
                present: 3
            })
        );
        assert_eq!(
            frame_datagram(b"X sip:a SIP/2.0\r\nVia: x"),
            Err(FrameError::Unterminated)
        );
    }

    #[test]
    fn keep_alive_pings_are_counted_and_a_split_one_waits_for_its_end() {
        assert_eq!(leading_keepalives(b"\r\n\r\nINVITE"), (4, 1));
        assert_eq!(leading_keepalives(b"\r\n\r\n\r\n\r\n"), (8, 2));
        assert_eq!(
            leading_keepalives(b"\r\nINVITE"),
            (2, 0),
            "a lone CRLF is skipped"
        );
        assert_eq!(
            leading_keepalives(b"\r\n\r"),
            (0, 0),
            "the rest may be on its way"
        );
        assert_eq!(leading_keepalives(b"\r\n\r\n\r\n"), (4, 1));
        assert_eq!(
            leading_keepalives(b"\n\n"),
            (2, 0),
            "bare line ends are not pings"
        );
        assert_eq!(leading_keepalives(b"INVITE"), (0, 0));
        assert_eq!(leading_keepalives(b""), (0, 0));
    }

    #[test]
    fn streams_wait_for_the_whole_body_then_frame_one_message() {
        let two = b"A sip:a SIP/2.0\r\nContent-Length: 2\r\n\r\nhiB sip:b SIP/2.0\r\n";
        let frame = frame_stream(two).expect("ok").expect("complete");
        assert_eq!(frame.len(), 40);
        assert_eq!(frame_stream(&two[..39]), Ok(None));
        assert_eq!(
            frame_stream(b"A sip:a SIP/2.0\r\n\r\n"),
            Err(FrameError::MissingContentLength)
        );
        assert_eq!(
            frame_stream(&vec![b'a'; MAX_MESSAGE_BYTES + 1]),
            Err(FrameError::TooLarge)
        );
    }

    /// One thing a stream carries: a keep-alive ping, or a message whose body may hold line
    /// ends, NULs and anything else.
    fn stream_item() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(PING.to_vec()),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|body| {
                let mut message = format!(
                    "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                message.extend(body);
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn a_stream_yields_its_messages_and_pings_however_its_reads_split_it(
            items in prop::collection::vec(stream_item(), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let stream = items.concat();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(stream.len());
            let mut reader = StreamReader::default();
            let (mut messages, mut pings, mut from) = (Vec::new(), 0, 0);
            for to in cuts {
                let received = reader.push(&stream[from..to]);
                prop_assert_eq!(received.error, None);
                messages.extend(received.messages);
                pings += received.pings;
                from = to;
            }
            let (sent_pings, sent_messages): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
                items.into_iter().partition(|item| item == PING);
            prop_assert_eq!(messages, sent_messages);
            prop_assert_eq!(pings, sent_pings.len());
        }
    }

    #[test]
    fn a_stream_that_cannot_be_framed_ends_after_the_messages_before_it() {
        let mut reader = StreamReader::default();
        let received =
            reader.push(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(received.messages.len(), 1);
        assert_eq!(received.error, Some(FrameError::MissingContentLength));
    }
}
