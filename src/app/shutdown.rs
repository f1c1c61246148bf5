//! The signals that stop the sidecar (SIGTERM, SIGINT) and the one that
//! reloads it (SIGHUP).

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The next SIGHUP; never, where the signal cannot be installed.
pub struct Hangup(Option<tokio::signal::unix::Signal>);

impl Hangup {
    pub fn new() -> Hangup {
        Hangup(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
    }

    pub async fn recv(&mut self) {
        match self.0.as_mut() {
            Some(h) => {
                if h.recv().await.is_none() {
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending().await,
        }
    }
}

impl Default for Hangup {
    fn default() -> Hangup {
        Hangup::new()
    }
}
