//! The little of WebSocket (RFC 6455) that `kubectl exec` needs: the handshake's accept
//! key, and frames read from the client (masked) and written to it (unmasked), with
//! Kubernetes' channel byte in front of each binary message (`v5.channel.k8s.io`).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The subprotocol served: stdin 0, stdout 1, stderr 2, status 3, resize 4, and a close
/// message (255, channel) that ends one stream.
pub const PROTOCOL: &str = "v5.channel.k8s.io";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
/// The client's terminal size, `{"Width": .., "Height": ..}`.
pub const RESIZE: u8 = 4;
pub const CLOSE_CHANNEL: u8 = 255;

/// The largest message taken from a client (stdin arrives in small pieces).
const MAX_MESSAGE: u64 = 1 << 20;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    tessera_model::kube::encode_base64(digest.as_ref())
}

/// One frame to the client: a binary message, FIN set, no mask.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A channel's data as one binary message.
pub fn channel_message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    frame(0x2, &payload)
}

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Close,
    /// Text, pong, continuation: not used by the protocol.
    Other,
}

/// Reads one frame from the client (which must mask it).
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Message> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if !masked {
        return Err(std::io::Error::other("a client frame is not masked"));
    }
    if len > MAX_MESSAGE {
        return Err(std::io::Error::other("a client frame is too large"));
    }
    let mut mask = [0u8; 4];
    r.read_exact(&mut mask).await?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(match opcode {
        0x2 => Message::Binary(payload),
        0x8 => Message::Close,
        0x9 => Message::Ping(payload),
        _ => Message::Other,
    })
}

pub async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_by_length() {
        assert_eq!(frame(0x2, b"ab"), [0x82, 2, b'a', b'b']);
        let mid = frame(0x2, &[0u8; 300]);
        assert_eq!(&mid[..4], &[0x82, 126, 1, 44]);
        let big = frame(0x2, &vec![0u8; 70_000]);
        assert_eq!(&big[..2], &[0x82, 127]);
        assert_eq!(big.len(), 70_000 + 10);
        assert_eq!(channel_message(STDOUT, b"hi"), [0x82, 3, 1, b'h', b'i']);
    }

    #[tokio::test]
    async fn client_frames_are_unmasked_and_checked() {
        let mask = [1u8, 2, 3, 4];
        let data = [STDIN, b'x', b'y'];
        let mut wire = vec![0x82, 0x80 | 3];
        wire.extend_from_slice(&mask);
        wire.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        wire.extend_from_slice(&[0x88, 0x80, 0, 0, 0, 0]);
        let mut r = &wire[..];
        assert_eq!(
            read_message(&mut r).await.unwrap(),
            Message::Binary(data.to_vec())
        );
        assert_eq!(read_message(&mut r).await.unwrap(), Message::Close);
        // Unmasked, or over the size cap: refused.
        let mut r = &[0x82u8, 2, 0, 0][..];
        assert!(read_message(&mut r).await.is_err());
        let mut huge = vec![0x82u8, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut r = &huge[..];
        assert!(read_message(&mut r).await.is_err());
    }
}
