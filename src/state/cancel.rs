//! CancelRequest routing. Clients get pgward's own (pid, secret) pair; while a client has a
//! server connection, its slot names that server's pid and key, and a cancel is forwarded
//! there over a fresh connection, exactly as libpq would send it.
//!
//! A cancel takes a while to land (a connection to PostgreSQL, which forks for it), and the
//! client's statement may end meanwhile. So the slot counts the cancels read from it that have
//! not landed, and a server is handed to another client only once that count is back to 0
//! (`CancelHandle::settled`): a late cancel then finds the server idle, where PostgreSQL
//! ignores it, instead of cancelling the next client's statement. PgBouncer does the same.
//!
//! A client whose request waits for a server connection has no server to cancel on; its
//! cancel ends the wait instead, and the request fails with 57014 as a cancelled statement
//! would (PgBouncer drops such a cancel, and the statement runs once a server frees up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

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
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    target: Option<CancelTarget>,
    /// Cancels read from this slot that have not landed yet.
    forwarding: u32,
    /// The session's task while its request waits for a server connection.
    waiting: Option<Waker>,
    /// A cancel came during that wait.
    cancelled: bool,
}

impl CancelSlot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().expect("cancel slot lock")
    }

    pub fn set(&self, target: Option<CancelTarget>) {
        self.state().target = target;
    }

    pub fn target(&self) -> Option<CancelTarget> {
        self.state().target.clone()
    }

    /// Ready once a cancel came for the request waiting for a server connection; else
    /// the caller's task is woken when one comes. Call `stop_waiting` when the wait ends.
    pub fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state();
        if std::mem::take(&mut state.cancelled) {
            state.waiting = None;
            return Poll::Ready(());
        }
        match &mut state.waiting {
            Some(waker) => waker.clone_from(cx.waker()),
            waiting => *waiting = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The wait for a server connection is over: a cancel from now on is the server's. True
    /// when a cancel came that the wait did not see (it ended at the same moment): the
    /// request is cancelled all the same, since it has not been sent.
    pub fn stop_waiting(&self) -> bool {
        let mut state = self.state();
        state.waiting = None;
        std::mem::take(&mut state.cancelled)
    }

    /// What a cancel for this client does: ends its wait for a server connection (None),
    /// or goes to its server, counted as on its way until the caller's `Forwarding` drops.
    /// None too when the client is not running anything.
    fn take_cancel(&self) -> Option<CancelTarget> {
        let mut state = self.state();
        if let Some(waker) = state.waiting.take() {
            state.cancelled = true;
            waker.wake();
            tracing::info!(
                client_pid = self.pid,
                "cancelled a request waiting for a server connection"
            );
            return None;
        }
        let target = state.target.clone()?;
        state.forwarding += 1;
        Some(target)
    }

    /// Forgets the server, so no later cancel goes there. True when a cancel read before
    /// is still on its way: the server must not serve another client until it has landed.
    pub fn clear(&self) -> bool {
        let mut state = self.state();
        state.target = None;
        state.forwarding > 0
    }
}

#[derive(Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, Arc<CancelSlot>>>,
    /// Wakes the sessions waiting for their slot's cancels to land (rare, so one for all).
    landed: Notify,
}

/// Registration of one client; unregisters on drop.
pub struct CancelHandle {
    pub slot: Arc<CancelSlot>,
    registry: Arc<CancelRegistry>,
}

impl CancelHandle {
    /// Waits until the cancels read from this client's slot have landed (at most the
    /// forwarding timeout). Call after `CancelSlot::clear` said some are on their way.
    pub async fn settled(&self) {
        loop {
            let landed = self.registry.landed.notified();
            let mut landed = std::pin::pin!(landed);
            landed.as_mut().enable();
            if self.slot.state().forwarding == 0 {
                return;
            }
            landed.await;
        }
    }
}

/// One cancel on its way to a server, counted in its slot until it has landed or failed.
struct Forwarding<'a> {
    slot: Arc<CancelSlot>,
    registry: &'a CancelRegistry,
}

impl Drop for Forwarding<'_> {
    fn drop(&mut self) {
        self.slot.state().forwarding -= 1;
        self.registry.landed.notify_waiters();
    }
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
            state: Mutex::default(),
        });
        slots.insert(pid, slot.clone());
        CancelHandle {
            slot,
            registry: self.clone(),
        }
    }

    /// Forwards a cancel when pid and secret match a client that is running something.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let slot = {
            let slots = self.slots.lock().expect("cancel registry lock");
            slots
                .get(&pid)
                .filter(|slot| slot.secret == secret)
                .cloned()
        };
        let forward = slot.and_then(|slot| {
            let target = slot.take_cancel()?;
            Some((
                target,
                Forwarding {
                    slot,
                    registry: self,
                },
            ))
        });
        let Some((t, _forwarding)) = forward else {
            tracing::debug!(pid, "cancel request forwarded to no server");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendTls;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::net::TcpListener;

    /// A server that takes a cancel, holds its connection for a while as a slow postmaster
    /// would, and only then closes it.
    async fn slow_server() -> (Arc<BackendTarget>, Arc<AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut packet = [0u8; 16];
            s.read_exact(&mut packet).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let target = Arc::new(BackendTarget {
            name: "slow".into(),
            host: "127.0.0.1".into(),
            port,
            tls: BackendTls::Disable,
            tls_config: None,
        });
        (target, closed)
    }

    #[tokio::test]
    async fn a_server_is_let_go_only_once_its_cancels_have_landed() {
        let registry = Arc::new(CancelRegistry::default());
        let handle = registry.register();
        let (backend, closed) = slow_server().await;
        handle.slot.set(Some(CancelTarget {
            backend,
            pid: 42,
            secret: 7,
        }));
        let (pid, secret) = (handle.slot.pid, handle.slot.secret);
        let forward = tokio::spawn({
            let registry = registry.clone();
            async move { registry.cancel(pid, secret).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(handle.slot.clear(), "the cancel is still on its way");
        handle.settled().await;
        assert!(
            closed.load(Ordering::SeqCst),
            "settled before the server closed the cancel connection"
        );
        forward.await.unwrap();
        // Cleared: a cancel now is not forwarded, and there is nothing to wait for.
        registry.cancel(pid, secret).await;
        assert!(!handle.slot.clear());
    }

    #[tokio::test]
    async fn a_cancel_that_ends_a_wait_is_reported_once_even_when_the_wait_ended_first() {
        let registry = Arc::new(CancelRegistry::default());
        let handle = registry.register();
        let (pid, secret) = (handle.slot.pid, handle.slot.secret);
        // Waiting: the session's task has registered its waker.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(handle.slot.poll_cancelled(&mut cx).is_pending());
        // The cancel comes as the checkout succeeds, before the session polls again.
        registry.cancel(pid, secret).await;
        assert!(handle.slot.stop_waiting(), "the cancel must not be lost");
        assert!(
            !handle.slot.stop_waiting(),
            "nor carried over to the next wait"
        );
        // Not waiting and no server: a cancel does nothing.
        registry.cancel(pid, secret).await;
        assert!(!handle.slot.stop_waiting());
    }
}
