//! Runs the quick-start binary the way README.md tells a new user to, and checks what it prints.

use std::process::Command;

#[test]
fn quickstart_runs_a_real_workflow_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("quickstart.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_cloacina-quickstart"))
        .arg(&url)
        .output()
        .expect("run quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("status:    Completed"), "{stdout}");
    assert!(
        stdout.contains("task check_stock  Completed  attempts: 2"),
        "the retry happened:\n{stdout}"
    );
    assert!(stdout.contains("\"label\": \"SHIP-A-1001\""), "{stdout}");
    assert!(stdout.contains("\"total\": 56.0"), "{stdout}");
    assert!(
        dir.path().join("quickstart.db").exists(),
        "state is in the SQLite file"
    );
}

#[test]
fn quickstart_reports_a_bad_database_url() {
    let out = Command::new(env!("CARGO_BIN_EXE_cloacina-quickstart"))
        .arg("mysql://nope")
        .output()
        .expect("run quickstart");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid database URL 'mysql://nope': unknown scheme"),
        "{stderr}"
    );
}
