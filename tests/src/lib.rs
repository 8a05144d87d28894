//! What every end-to-end test shares: where the real binaries are, the example packages
//! (built once per test run), temporary homes with a daemon in them, waits on a condition
//! instead of fixed sleeps, a factory for rows in a given state, fault injection, and the HTTP
//! server in a temporary home driven over HTTP.
//!
//! The binaries are not built from inside a test: `scripts/test.sh` runs
//! `cargo build --workspace --all-targets` first. Run alone, build them the same way before
//! `cargo test -p cloacina-e2e`; a missing binary fails the test with that instruction.

pub mod balancer;
pub mod bins;
pub mod compiler;
pub mod ctl;
pub mod faults;
pub mod home;
pub mod packages;
pub mod replicas;
pub mod rows;
pub mod server;
pub mod wait;

pub use home::Home;
pub use wait::wait_for;

/// One test per backend for a body `fn name(backend: Backend)`: `name::sqlite` and
/// `name::postgres` (which skips when PostgreSQL is unreachable, except under `CI=true`).
#[macro_export]
macro_rules! both_backends {
    ($body:ident) => {
        mod $body {
            #[test]
            fn sqlite() {
                super::$body($crate::server::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                super::$body($crate::server::Backend::Postgres);
            }
        }
    };
}
