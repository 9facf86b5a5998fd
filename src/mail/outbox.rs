//! The outbox: each message written as `<dir>/<message-id>.eml`, the exact bytes SMTP
//! would carry. For trying cronmail without an account, and for dry runs.

use std::path::PathBuf;

use super::Delivered;
use crate::failure::{ErrorClass, Failure, Phase};
use crate::message::Outgoing;
use crate::persist::write_atomically;

/// Writes each message to `<dir>/<message-id>.eml`.
pub struct Outbox {
    pub dir: PathBuf,
}

impl Outbox {
    pub(super) async fn send(&self, out: &Outgoing) -> Result<Delivered, Failure> {
        let dir = self.dir.clone();
        let name = format!("{}.eml", out.message_id.replace('/', "_"));
        let bytes = out.bytes.clone();
        let path = dir.join(&name);
        let result =
            tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes)).await;
        let failed = |e: &dyn std::fmt::Display| {
            Failure::new(
                ErrorClass::Local,
                Some(Phase::Write),
                format!("writing `{}`: {e}", path.display()),
            )
        };
        match result {
            Ok(Ok(())) => Ok(Delivered {
                code: None,
                reply: format!("written to {}", path.display()),
            }),
            Ok(Err(e)) => Err(failed(&e).with_hint(format!(
                "make sure `{}` exists and cronmail may write to it",
                self.dir.display()
            ))),
            Err(e) => Err(failed(&e)),
        }
    }
}
