//! CancelRequest routing. Clients get pgward's own (pid, secret) pair; while a client has a
//! server connection, its slot names that server's pid and key, and a cancel is forwarded
//! there over a fresh connection, exactly as libpq would send it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pool::BackendTarget;

#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub backend: Arc<BackendTarget>,
    pub pid: i32,
    pub secret: i32,
}

pub struct CancelSlot {
    pub pid: i32,
    pub secret: i32,
    target: Mutex<Option<CancelTarget>>,
}

impl CancelSlot {
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.target.lock().expect("cancel slot lock") = target;
    }

    pub fn target(&self) -> Option<CancelTarget> {
        self.target.lock().expect("cancel slot lock").clone()
    }
}

#[derive(Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, Arc<CancelSlot>>>,
}

/// Registration of one client; unregisters on drop.
pub struct CancelHandle {
    pub slot: Arc<CancelSlot>,
    registry: Arc<CancelRegistry>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry
            .slots
            .lock()
            .expect("cancel registry lock")
            .remove(&self.slot.pid);
    }
}

impl CancelRegistry {
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        self.register_as(None)
    }

    /// Registers a client under `pid` if that pid is free (session mode gives a client its
    /// server's own process id, so `pg_backend_pid()` agrees with what the client was told),
    /// else under a pid of pgward's choosing.
    pub fn register_as(self: &Arc<Self>, wanted: Option<i32>) -> CancelHandle {
        let mut slots = self.slots.lock().expect("cancel registry lock");
        let pid = match wanted {
            Some(pid) if pid != 0 && !slots.contains_key(&pid) => pid,
            _ => loop {
                let pid = rand::random::<i32>() & 0x3fff_ffff;
                if pid != 0 && !slots.contains_key(&pid) {
                    break pid;
                }
            },
        };
        let slot = Arc::new(CancelSlot {
            pid,
            secret: rand::random(),
            target: Mutex::new(None),
        });
        slots.insert(pid, slot.clone());
        CancelHandle {
            slot,
            registry: self.clone(),
        }
    }

    /// Forwards a cancel when pid and secret match a client that is running something.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = {
            let slots = self.slots.lock().expect("cancel registry lock");
            match slots.get(&pid) {
                Some(slot) if slot.secret == secret => {
                    slot.target.lock().expect("cancel slot lock").clone()
                }
                _ => None,
            }
        };
        let Some(t) = target else {
            tracing::debug!(pid, "cancel request matched no running query");
            return;
        };
        let send = async {
            let mut s = TcpStream::connect((t.backend.host.as_str(), t.backend.port)).await?;
            let mut packet = Vec::with_capacity(16);
            packet.extend_from_slice(&16i32.to_be_bytes());
            packet.extend_from_slice(&80877102i32.to_be_bytes());
            packet.extend_from_slice(&t.pid.to_be_bytes());
            packet.extend_from_slice(&t.secret.to_be_bytes());
            s.write_all(&packet).await?;
            // PostgreSQL closes the connection once it has signalled the backend, and only
            // then is the client's own cancel connection closed (libpq's cancel waits for
            // that close): a cancel still in flight could otherwise hit the client's next
            // statement.
            let mut rest = [0u8; 16];
            while s.read(&mut rest).await? > 0 {}
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), send).await {
            Ok(Ok(())) => tracing::info!(
                client_pid = pid,
                server_pid = t.pid,
                "forwarded cancel request"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not forward cancel request"),
            Err(_) => tracing::warn!("timed out forwarding cancel request"),
        }
    }
}
