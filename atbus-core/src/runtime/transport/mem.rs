//! `mem://name`: two nodes in one process. A listener registers its name in a process-wide table;
//! a dialer finds it there and both ends get a pair of channels that hand the engine's `Bytes`
//! over without copying or a socket.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::runtime::handle::ConnectionHandle;

/// One end of an in-process connection.
pub(crate) struct MemPipe {
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub rx: mpsc::UnboundedReceiver<Bytes>,
}

type Table = Mutex<HashMap<String, mpsc::UnboundedSender<MemPipe>>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// A listener on `mem://name`.
pub(crate) struct MemListener {
    name: String,
    incoming: mpsc::UnboundedReceiver<MemPipe>,
}

impl MemListener {
    /// Takes `name`; fails if another listener in the process holds it.
    pub fn bind(name: &str) -> std::io::Result<Self> {
        let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
        if table.get(name).is_some_and(|tx| !tx.is_closed()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("mem://{name} is already taken in this process"),
            ));
        }
        let (tx, incoming) = mpsc::unbounded_channel();
        table.insert(name.to_string(), tx);
        Ok(Self {
            name: name.to_string(),
            incoming,
        })
    }

    /// The next connection.
    pub async fn accept(&mut self) -> Option<MemPipe> {
        self.incoming.recv().await
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
        table.remove(&self.name);
    }
}

/// Connects to the listener on `mem://name`.
pub(crate) fn connect(name: &str) -> std::io::Result<MemPipe> {
    let table = table().lock().unwrap_or_else(|p| p.into_inner());
    let listener = table.get(name).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("nothing listens on mem://{name} in this process"),
        )
    })?;
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    listener
        .send(MemPipe { tx: b_tx, rx: b_rx })
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
    Ok(MemPipe { tx: a_tx, rx: a_rx })
}

/// Runs the connection of `handle` over `pipe` until either end drops it.
pub(crate) async fn run(handle: ConnectionHandle, pipe: MemPipe) {
    let MemPipe { tx, mut rx } = pipe;
    let read = async {
        while let Some(data) = rx.recv().await {
            handle.deliver(data);
        }
        handle.lost();
    };
    let write = async {
        while let Some(frames) = handle.transmits().await {
            for frame in frames {
                if tx.send(frame).is_err() {
                    handle.lost();
                    return;
                }
            }
        }
    };
    tokio::select! {
        () = read => {}
        () = write => {}
    }
    handle.finish();
}
