//! Length-prefixed frames on a libp2p stream: `u32 length || body`, with the
//! length checked against a limit before a single body byte is read.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A framing failure on a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream ended cleanly between frames.
    #[error("stream closed")]
    Closed,
    /// The announced length is outside the allowed range.
    #[error("frame of {len} bytes outside {min}..={max}")]
    BadLength {
        /// Announced length.
        len: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// An I/O error (including a stream that ended inside a frame).
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame whose body is `min..=max` bytes long.
pub async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    min: usize,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = io.read(&mut header[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())
            });
        }
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len < min || len > max {
        return Err(FrameError::BadLength { len, min, max });
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one frame (length prefix and body) and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(body.len()).map_err(|_| FrameError::BadLength {
        len: body.len(),
        min: 0,
        max: u32::MAX as usize,
    })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, b"hello").await.unwrap();
        write_frame(&mut buf, &[0u8; 100]).await.unwrap();
        let mut r = Cursor::new(buf.into_inner());
        assert_eq!(read_frame(&mut r, 1, 10).await.unwrap(), b"hello");
        assert!(matches!(
            read_frame(&mut r, 1, 10).await,
            Err(FrameError::BadLength { len: 100, .. })
        ));

        let mut r = Cursor::new(vec![0, 0, 0, 5, 1, 2]);
        assert!(matches!(
            read_frame(&mut r, 0, 10).await,
            Err(FrameError::Io(_))
        ));
        let mut r = Cursor::new(Vec::new());
        assert!(matches!(
            read_frame(&mut r, 0, 10).await,
            Err(FrameError::Closed)
        ));
        let mut r = Cursor::new(vec![0, 0]);
        assert!(matches!(
            read_frame(&mut r, 0, 10).await,
            Err(FrameError::Io(_))
        ));
    }
}
