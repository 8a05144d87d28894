//! A test hook that holds the writer between group commits, so a test can queue several
//! writes and have them committed as one batch, deterministically, on either backend. Not for
//! production use: while held, every write waits.

use tokio::sync::oneshot;

use super::{Backend, Store, StoreError};
use crate::workflow::BoxFuture;

/// The writer is busy with an empty write of its own that waits for [`release`]; writes
/// queued meanwhile form the writer's next batch. Dropping the hold releases it too.
///
/// [`release`]: WriterHold::release
#[doc(hidden)]
pub struct WriterHold {
    release: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
}

impl WriterHold {
    /// Lets the writer go on, and resolves once the holding write has committed: the writes
    /// queued while held are then the writer's next batch (up to its batch limit).
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        match self.done.take() {
            Some(done) => done
                .await
                .map_err(|e| StoreError::InvalidRequest(format!("the writer hold failed: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for WriterHold {
    fn drop(&mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
    }
}

impl Store {
    /// Holds the writer (see [`WriterHold`]); resolves once the writer is held, so every write
    /// queued from then on waits for the release and commits in the next batch. A test hook.
    #[doc(hidden)]
    pub async fn hold_writer(&self) -> Result<WriterHold, StoreError> {
        let (entered_tx, entered) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let store = self.clone();
        let done = tokio::spawn(async move {
            match &store.inner.backend {
                Backend::Sqlite(s) => s.write(holding(entered_tx, released)).await,
                Backend::Postgres(p) => {
                    p.write(holding(entered_tx, released), |_: &()| Vec::new())
                        .await
                }
            }
        });
        if entered.await.is_err() {
            // The holding write never ran: its batch failed, or the writer is gone.
            return Err(match done.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) | Err(_) => StoreError::WriterGone,
            });
        }
        Ok(WriterHold {
            release: Some(release),
            done: Some(done),
        })
    }
}

/// The holding write: says it is running, then waits for the release (a dropped sender
/// releases as well) and writes nothing.
fn holding<C>(
    entered: oneshot::Sender<()>,
    released: oneshot::Receiver<()>,
) -> impl for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, Result<(), StoreError>> + Send + 'static {
    move |_| {
        Box::pin(async move {
            let _ = entered.send(());
            let _ = released.await;
            Ok(())
        })
    }
}
