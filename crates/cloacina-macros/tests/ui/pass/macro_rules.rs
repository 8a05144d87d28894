//! Arguments passed through `macro_rules!` fragments arrive wrapped in invisible groups.

use cloacina_macros::task;
use cloacina_workflow::{Context, TaskError};

macro_rules! retrying_task {
    ($name:ident, $attempts:expr, $delay:expr) => {
        #[task(retry_attempts = $attempts, retry_delay_ms = $delay, retry_backoff = "fixed")]
        async fn $name(_ctx: &mut Context) -> Result<(), TaskError> {
            Ok(())
        }
    };
}

retrying_task!(flaky, 5, 20);

fn main() {
    assert_eq!(flaky_task().spec().retry.max_attempts, 5);
}
