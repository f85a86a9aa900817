//! DNS over TCP: each message travels behind a two-byte length (RFC 1035
//! 4.2.2, RFC 7766). [`TcpFramer`] cuts a connection's byte stream into
//! messages; [`frame`] puts the length in front of one.
//!
//! Bounded: a connection holds at most one message being received (at
//! most 65,535 bytes by the length field's nature), and a zero-length
//! message, which no resolver sends, closes the connection as malformed.

/// The longest DNS message a two-byte length can announce.
pub const MAX_MESSAGE: usize = u16::MAX as usize;

/// What came out of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// A whole message, without its length.
    Message(Vec<u8>),
    /// A message announced with length 0: close the connection.
    Malformed,
}

/// Reassembles length-prefixed DNS messages from one TCP connection.
#[derive(Debug, Clone, Default)]
pub struct TcpFramer {
    pending: Vec<u8>,
}

impl TcpFramer {
    pub fn new() -> TcpFramer {
        TcpFramer::default()
    }

    /// Takes bytes read from the connection; returns the messages they
    /// complete, in order. At most `MAX_MESSAGE + 2` bytes are held.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Framed> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(header) = self.pending.get(start..start + 2) {
            let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
            if len == 0 {
                out.push(Framed::Malformed);
                self.pending.clear();
                return out;
            }
            let Some(message) = self.pending.get(start + 2..start + 2 + len) else {
                break;
            };
            out.push(Framed::Message(message.to_vec()));
            start += 2 + len;
        }
        self.pending.drain(..start);
        out
    }

    /// Bytes of an incomplete message held.
    pub fn held(&self) -> usize {
        self.pending.len()
    }
}

/// `message` with its two-byte length in front; `None` if it is too long
/// for one (the caller answers with TC set or SERVFAIL instead).
pub fn frame(message: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(message.len()).ok()?;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_whole_however_the_stream_is_cut() {
        let mut stream = frame(b"first").unwrap();
        stream.extend(frame(b"second message").unwrap());
        stream.extend(frame(&[7u8; 300]).unwrap());
        let expected = vec![
            Framed::Message(b"first".to_vec()),
            Framed::Message(b"second message".to_vec()),
            Framed::Message(vec![7u8; 300]),
        ];
        for cut in 1..stream.len() {
            let mut framer = TcpFramer::new();
            let mut got = framer.push(&stream[..cut]);
            got.extend(framer.push(&stream[cut..]));
            assert_eq!(got, expected, "cut at {cut}");
            assert_eq!(framer.held(), 0);
        }
        // Byte by byte.
        let mut framer = TcpFramer::new();
        let got: Vec<Framed> = stream.iter().flat_map(|b| framer.push(&[*b])).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_zero_length_message_is_malformed_and_the_largest_one_fits() {
        let mut framer = TcpFramer::new();
        assert_eq!(framer.push(&[0, 0, 1, 2]), vec![Framed::Malformed]);
        assert_eq!(framer.held(), 0);
        let big = vec![1u8; MAX_MESSAGE];
        let framed = frame(&big).unwrap();
        assert_eq!(&framed[..2], &[0xff, 0xff]);
        let mut framer = TcpFramer::new();
        assert_eq!(framer.push(&framed), vec![Framed::Message(big)]);
        assert!(frame(&vec![0u8; MAX_MESSAGE + 1]).is_none());
    }

    #[test]
    fn an_incomplete_message_is_held_until_it_is_whole() {
        let mut framer = TcpFramer::new();
        assert!(framer.push(&[0, 5, b'a', b'b']).is_empty());
        assert_eq!(framer.held(), 4);
        assert_eq!(
            framer.push(b"cde"),
            vec![Framed::Message(b"abcde".to_vec())]
        );
    }
}
