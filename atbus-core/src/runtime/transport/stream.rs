//! A connection over an ordered byte stream (TCP, Unix, in-process pipes): one task reads and
//! feeds the engine, the same task's other half writes what the engine queued for it, coalescing
//! small frames into one write.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::engine::ConnectionId;
use crate::runtime::shared::Shared;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Frames smaller than this are copied into one buffer and written together.
const COALESCE_BELOW: usize = 16 * 1024;
/// A coalescing buffer is written once it holds this much.
const COALESCE_LIMIT: usize = 256 * 1024;

/// Runs connection `id` over `reader` / `writer` until either side ends it.
pub(crate) async fn run<R, W>(
    shared: Arc<Shared>,
    id: ConnectionId,
    notify: Arc<Notify>,
    reader: R,
    writer: W,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    tokio::select! {
        () = read_loop(&shared, id, reader) => {}
        () = write_loop(&shared, id, &notify, writer) => {}
    }
    shared.lock().remove_link(id);
}

async fn read_loop<R: AsyncRead + Unpin>(shared: &Shared, id: ConnectionId, mut reader: R) {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buffer.reserve(READ_CHUNK);
        match reader.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => {
                shared.with(|state| state.endpoint.connection_lost(Instant::now(), id));
                return;
            }
            Ok(_) => {
                let data = buffer.split().freeze();
                shared.input(id, data);
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: &Shared,
    id: ConnectionId,
    notify: &Notify,
    mut writer: W,
) {
    loop {
        let (frames, closing) = shared.take_queue(id);
        if frames.is_empty() {
            if closing {
                let _ = writer.shutdown().await;
                return;
            }
            notify.notified().await;
            continue;
        }
        if write_frames(&mut writer, frames).await.is_err() {
            shared.with(|state| state.endpoint.connection_lost(Instant::now(), id));
            return;
        }
    }
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
