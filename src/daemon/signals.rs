//! One signal worker turns the OS's signals into the daemon's `Control` events:
//! SIGHUP reloads, SIGTERM and SIGINT stop.

use tokio::sync::mpsc;

/// What the outside world asks of a running daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Re-read jobs.toml (SIGHUP).
    Reload,
    /// Stop firing, let in-flight sends finish, exit (SIGTERM, SIGINT).
    Shutdown,
}

/// Turns SIGHUP into `Reload` and SIGTERM/SIGINT into `Shutdown`.
pub fn signal_events() -> std::io::Result<mpsc::Receiver<Control>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = hup.recv() => Control::Reload,
                _ = term.recv() => Control::Shutdown,
                _ = int.recv() => Control::Shutdown,
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
