//! A connection over an ordered byte stream (TCP, Unix, TLS, a QUIC stream): one task reads and
//! feeds the engine, the same task's other half writes what the engine queued for it, coalescing
//! small frames into one write. Both halves use the connection's handle.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::runtime::handle::ConnectionHandle;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Frames smaller than this are copied into one buffer and written together.
const COALESCE_BELOW: usize = 16 * 1024;
/// A coalescing buffer is written once it holds this much.
const COALESCE_LIMIT: usize = 256 * 1024;

/// Runs the connection of `handle` over `reader` / `writer` until either side ends it.
pub(crate) async fn run<R, W>(handle: ConnectionHandle, reader: R, writer: W)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    tokio::select! {
        () = read_loop(&handle, reader) => {}
        () = write_loop(&handle, writer) => {}
    }
    handle.finish();
}

async fn read_loop<R: AsyncRead + Unpin>(handle: &ConnectionHandle, mut reader: R) {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buffer.reserve(READ_CHUNK);
        match reader.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => {
                handle.lost();
                return;
            }
            Ok(_) => handle.deliver(buffer.split().freeze()),
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(handle: &ConnectionHandle, mut writer: W) {
    while let Some(frames) = handle.transmits().await {
        if write_frames(&mut writer, frames).await.is_err() {
            handle.lost();
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes `frames` in order, small ones gathered into one write.
async fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frames: Vec<Bytes>,
) -> std::io::Result<()> {
    if let [frame] = frames.as_slice() {
        writer.write_all(frame).await?;
        return writer.flush().await;
    }
    let mut batch = BytesMut::new();
    for frame in frames {
        if frame.len() >= COALESCE_BELOW {
            if !batch.is_empty() {
                writer.write_all(&batch.split()).await?;
            }
            writer.write_all(&frame).await?;
            continue;
        }
        batch.extend_from_slice(&frame);
        if batch.len() >= COALESCE_LIMIT {
            writer.write_all(&batch.split()).await?;
        }
    }
    if !batch.is_empty() {
        writer.write_all(&batch).await?;
    }
    writer.flush().await
}
