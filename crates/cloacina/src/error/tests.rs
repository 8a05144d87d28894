//! The codes in the code and the table in `docs/errors.md` agree; every variant of every
//! public error answers a documented code.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::auth::{AuthError, Role};
use crate::config::{ConfigError, SettingError};
use crate::daemon::DaemonError;
use crate::engine::EngineError;
use crate::host::HostError;
use crate::package::PackageError;
use crate::package::archive::{ArchiveError, EntryProblem};
use crate::package::build::BuildError;
use crate::package::loader::LoadError;
use crate::package::manifest::ManifestError;
use crate::package::signing::SignatureError;
use crate::reconciler::{ReconcileError, StepError};
use crate::registry::{BoundSubscribers, GuardRefusal, RegistryError};
use crate::schedule::ScheduleError;
use crate::store::{ExecutionStatus, StoreError};
use crate::tenant::TenantError;
use cloacina_workflow::abi::ErrorDoc;
use cloacina_workflow::{ContextError, GraphError, RetryPolicyError, TaskError, WorkflowError};

const DOC: &str = include_str!("../../../../docs/errors.md");

fn s() -> String {
    "x".to_string()
}

/// `(code, kind, HTTP status, CLI exit)` of each row of the docs' code table.
fn doc_rows() -> BTreeMap<String, (String, u16, i32)> {
    let mut rows = BTreeMap::new();
    for line in DOC.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `code` | kind | status | exit | meaning |" splits into 7 cells.
        if cells.len() != 7 || !cells[1].starts_with('`') {
            continue;
        }
        let code = cells[1].trim_matches('`').to_string();
        let status = cells[3].parse().expect("an HTTP status");
        let exit = cells[4].parse().expect("an exit code");
        let previous = rows.insert(code.clone(), (cells[2].to_string(), status, exit));
        assert!(previous.is_none(), "docs/errors.md lists `{code}` twice");
    }
    rows
}

#[test]
fn codes_are_stable_snake_case_and_unique() {
    let mut seen = BTreeSet::new();
    for c in CODES {
        assert!(
            c.code.starts_with(|ch: char| ch.is_ascii_lowercase())
                && !c.code.ends_with('_')
                && !c.code.contains("__")
                && c.code
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
            "`{}` is not snake_case",
            c.code
        );
        assert!(seen.insert(c.code), "`{}` is listed twice", c.code);
        assert!(!c.meaning.is_empty(), "`{}` has no meaning", c.code);
    }
    let mut meanings = BTreeSet::new();
    for c in CODES {
        assert!(
            meanings.insert(c.meaning),
            "two codes share the meaning '{}'",
            c.meaning
        );
    }
}

#[test]
fn the_docs_table_is_the_code_table() {
    let rows = doc_rows();
    let documented: BTreeSet<&str> = rows.keys().map(String::as_str).collect();
    let coded: BTreeSet<&str> = CODES.iter().map(|c| c.code).collect();
    assert_eq!(
        documented.difference(&coded).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "documented in docs/errors.md but answered by no error"
    );
    assert_eq!(
        coded.difference(&documented).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "answered by an error but missing from docs/errors.md"
    );
    for c in CODES {
        let (kind, status, exit) = &rows[c.code];
        assert_eq!(kind, c.kind.as_str(), "kind of `{}`", c.code);
        assert_eq!(*status, c.kind.http_status(), "HTTP status of `{}`", c.code);
        assert_eq!(
            *exit,
            c.kind.cli_exit_code(),
            "CLI exit code of `{}`",
            c.code
        );
    }
}

#[test]
fn statuses_and_exit_codes_follow_the_wire_and_cli_rules() {
    use ErrorKind::*;
    let table = [
        (Invalid, 400, 5),
        (NotFound, 404, 3),
        (Conflict, 409, 5),
        (Unauthorized, 401, 4),
        (Forbidden, 403, 4),
        (Unavailable, 503, 5),
        (Internal, 500, 5),
    ];
    for (kind, status, exit) in table {
        assert_eq!((kind.http_status(), kind.cli_exit_code()), (status, exit));
    }
}

fn store_errors() -> Vec<StoreError> {
    let closed = diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::ClosedConnection,
        Box::new("server closed the connection".to_string()),
    );
    vec![
        StoreError::InvalidUrl {
            url: s(),
            reason: s(),
        },
        StoreError::Connect {
            backend: "SQLite",
            target: s(),
            message: s(),
        },
        StoreError::Migration(s()),
        StoreError::InvalidSchema(s()),
        StoreError::from(diesel::result::Error::NotFound),
        StoreError::from(closed),
        StoreError::Pool(s()),
        StoreError::ExecutionNotFound(Uuid::nil()),
        StoreError::ExecutionExists { id: Uuid::nil() },
        StoreError::InvalidTransition {
            id: Uuid::nil(),
            action: "pause",
            status: ExecutionStatus::Completed,
        },
        StoreError::DuplicateExecution {
            dedup_key: s(),
            existing: None,
        },
        StoreError::CronInstantTaken {
            schedule_id: Uuid::nil(),
            instant: 0,
            existing: None,
        },
        StoreError::TenantExists(s()),
        StoreError::PackageExists {
            tenant: s(),
            name: s(),
            version: s(),
        },
        StoreError::InvalidRequest(s()),
        StoreError::Corrupt(s()),
        StoreError::Commit(s()),
        StoreError::WriterGone,
        StoreError::Closed,
        StoreError::Pool(s()).in_database("SQLite database /x.db"),
    ]
}

fn workflow_errors() -> Vec<WorkflowError> {
    vec![
        WorkflowError::Empty { workflow: s() },
        WorkflowError::InvalidName {
            what: "task",
            name: s(),
            reason: "r",
        },
        WorkflowError::DuplicateTask {
            workflow: s(),
            task: s(),
        },
        WorkflowError::MissingDependency {
            workflow: s(),
            task: s(),
            dependency: s(),
            suggestion: None,
        },
        WorkflowError::DuplicateDependency {
            workflow: s(),
            task: s(),
            dependency: s(),
        },
        WorkflowError::Cycle {
            workflow: s(),
            path: vec![s()],
        },
        WorkflowError::TriggerReference {
            workflow: s(),
            task: s(),
            reference: s(),
        },
        WorkflowError::RetryPolicy {
            workflow: s(),
            task: s(),
            cause: RetryPolicyError::ZeroAttempts,
        },
    ]
}

fn manifest_errors() -> Vec<ManifestError> {
    vec![
        ManifestError::Missing { path: s() },
        ManifestError::Read {
            path: s(),
            message: s(),
        },
        ManifestError::Malformed {
            path: s(),
            message: s(),
        },
        ManifestError::Invalid {
            path: s(),
            field: "package.name",
            message: s(),
        },
    ]
}

fn archive_errors() -> Vec<ArchiveError> {
    let mut v: Vec<ArchiveError> = manifest_errors().into_iter().map(Into::into).collect();
    v.extend([
        ArchiveError::MissingSource {
            dir: s(),
            file: "Cargo.toml",
        },
        ArchiveError::UnpackableFile {
            path: s(),
            problem: s(),
        },
        ArchiveError::BadLibrary {
            target: s(),
            path: s(),
            problem: s(),
        },
        ArchiveError::Io {
            action: "read",
            path: s(),
            cause: std::io::Error::other("x"),
        },
        ArchiveError::FileTooLarge { path: s(), size: 1 },
        ArchiveError::Corrupt {
            archive: s(),
            message: s(),
        },
        ArchiveError::UnsafeEntry {
            archive: s(),
            entry: s(),
            problem: EntryProblem::Duplicate,
        },
        ArchiveError::RecordTooLarge {
            archive: s(),
            entry: s(),
            what: "long name",
            size: 1,
            limit: 0,
        },
        ArchiveError::TooManyEntries {
            archive: s(),
            entry: s(),
            limit: 0,
        },
        ArchiveError::EntryTooLarge {
            archive: s(),
            entry: s(),
            limit: 0,
        },
        ArchiveError::TooLarge {
            archive: s(),
            entry: s(),
            limit: 0,
        },
        ArchiveError::MissingManifest { archive: s() },
        ArchiveError::InvalidManifest {
            archive: s(),
            cause: ManifestError::Missing { path: s() },
        },
        ArchiveError::DestinationExists {
            archive: s(),
            dest: s(),
        },
        ArchiveError::NoLibraryForTarget {
            name: s(),
            version: s(),
            target: s(),
            available: s(),
        },
        ArchiveError::SourceOnly {
            name: s(),
            version: s(),
            target: s(),
        },
    ]);
    v
}

fn signature_errors() -> Vec<SignatureError> {
    vec![
        SignatureError::Io {
            action: "read",
            path: s(),
            cause: std::io::Error::other("x"),
        },
        SignatureError::Archive(Box::new(ArchiveError::MissingManifest { archive: s() })),
        SignatureError::Sign {
            archive: s(),
            problem: s(),
        },
        SignatureError::KeyExists { path: s() },
        SignatureError::KeyNotFound { path: s() },
        SignatureError::MalformedKey {
            path: s(),
            kind: "public",
            problem: s(),
        },
        SignatureError::PrivateKeyGiven { path: s() },
        SignatureError::KeyTooOpen {
            path: s(),
            mode: 0o644,
        },
        SignatureError::ArchiveNotFound { archive: s() },
        SignatureError::NotAFile {
            what: "key file",
            path: s(),
            problem: "is a directory",
        },
        SignatureError::FileTooLarge {
            what: "key file",
            path: s(),
            limit: 0,
        },
        SignatureError::Required {
            archive: s(),
            sig: s(),
        },
        SignatureError::TrustedKey {
            path: s(),
            cause: Box::new(SignatureError::KeyNotFound { path: s() }),
        },
        SignatureError::RequiredWithoutKeys,
        SignatureError::Missing {
            archive: s(),
            sig: s(),
        },
        SignatureError::Malformed {
            archive: s(),
            sig: s(),
            problem: s(),
        },
        SignatureError::UnsupportedAlgorithm {
            archive: s(),
            sig: s(),
            algorithm: s(),
        },
        SignatureError::Tampered {
            archive: s(),
            sig: s(),
            actual: s(),
            signed: s(),
        },
        SignatureError::UntrustedKey {
            archive: s(),
            key: s(),
            trusted: s(),
        },
        SignatureError::BadSignature {
            archive: s(),
            sig: s(),
            key: s(),
        },
        SignatureError::NoTrustedKeys { archive: s() },
    ]
}

fn load_errors() -> Vec<LoadError> {
    let p = || ("p".to_string(), "f".to_string());
    let (package, file) = p();
    vec![
        LoadError::Manifest {
            dir: s(),
            cause: ManifestError::Missing { path: s() },
        },
        LoadError::Archive {
            archive: s(),
            cause: ArchiveError::MissingManifest { archive: s() },
        },
        LoadError::Io {
            package: package.clone(),
            file: file.clone(),
            action: "read",
            cause: std::io::Error::other("x"),
        },
        LoadError::WrongTarget {
            package: package.clone(),
            file: file.clone(),
            found: s(),
            expected: s(),
        },
        LoadError::Malformed {
            package: package.clone(),
            file: file.clone(),
            problem: s(),
        },
        LoadError::Quarantined {
            package: package.clone(),
            file: file.clone(),
            pid: s(),
            marker: s(),
        },
        LoadError::CrashedProbe {
            package: package.clone(),
            file: file.clone(),
            failure: crate::package::probe::ProbeFailure::TimedOut,
        },
        LoadError::Signature {
            archive: s(),
            cause: SignatureError::Missing {
                archive: s(),
                sig: s(),
            },
        },
        LoadError::Open {
            package: package.clone(),
            file: file.clone(),
            target: s(),
            message: s(),
        },
        LoadError::NotAPackage {
            package: package.clone(),
            file: file.clone(),
            symbol: "cloacina_abi_version",
        },
        LoadError::AbiMismatch {
            package: package.clone(),
            file: file.clone(),
            found: 1,
            expected: 2,
            sdk: "0.1.0",
        },
        LoadError::MissingSymbol {
            package: package.clone(),
            file: file.clone(),
            symbols: vec![s()],
            sdk: "0.1.0",
        },
        LoadError::Describe {
            package: package.clone(),
            file: file.clone(),
            message: s(),
        },
        LoadError::InvalidDescription {
            package: package.clone(),
            file: file.clone(),
            problems: vec![s()],
        },
        LoadError::ManifestMismatch {
            package: package.clone(),
            file,
            differences: vec![s()],
        },
        LoadError::Unknown {
            package: package.clone(),
            version: s(),
            what: "trigger",
            name: s(),
            available: vec![],
        },
        LoadError::Unknown {
            package: package.clone(),
            version: s(),
            what: "graph",
            name: s(),
            available: vec![],
        },
        LoadError::Call {
            package,
            version: s(),
            call: s(),
            error: Box::new(ErrorDoc::new("failed", "boom")),
        },
    ]
}

fn guard() -> GuardRefusal {
    GuardRefusal {
        refusals: vec![BoundSubscribers {
            tenant: "public".into(),
            reactor: "price_reactor".into(),
            subscribers: vec!["analyzer_v1".into(), "aggregator".into()],
        }],
    }
}

fn registry_errors() -> Vec<RegistryError> {
    vec![
        RegistryError::Guard(guard()),
        RegistryError::ReactorConflict {
            tenant: s(),
            reactor: s(),
            owner: s(),
            owner_id: s(),
            package: s(),
        },
        RegistryError::GraphConflict {
            tenant: s(),
            graph: s(),
            owner: s(),
            owner_id: s(),
            package: s(),
        },
        RegistryError::InvalidReactor {
            reactor: s(),
            package: s(),
            problem: s(),
        },
        RegistryError::UnknownReactor {
            tenant: s(),
            reactor: s(),
            available: vec![],
        },
        RegistryError::UnknownAccumulator {
            tenant: s(),
            reactor: s(),
            accumulator: s(),
            available: vec![],
        },
        RegistryError::UnknownGraph {
            tenant: s(),
            graph: s(),
            available: vec![],
        },
        RegistryError::NotTriggerLess {
            tenant: s(),
            graph: s(),
            reactor: s(),
        },
        RegistryError::GraphFailed {
            tenant: s(),
            graph: s(),
            package: s(),
            version: s(),
            message: s(),
        },
        RegistryError::Stopped,
    ]
}

fn build_errors() -> Vec<BuildError> {
    let status = || {
        std::process::Command::new("false")
            .status()
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(256))
    };
    vec![
        BuildError::NoDirectory { dir: s() },
        BuildError::MissingFile {
            dir: s(),
            file: "package.toml",
        },
        BuildError::Manifest(ManifestError::Missing { path: s() }),
        BuildError::CargoMissing {
            cause: std::io::Error::other("x"),
        },
        BuildError::Metadata {
            dir: s(),
            status: status(),
            stderr: s(),
        },
        BuildError::MetadataOutput {
            dir: s(),
            problem: s(),
        },
        BuildError::NotADynamicLibrary {
            package: s(),
            dir: s(),
        },
        BuildError::CargoFailed {
            package: s(),
            dir: s(),
            status: status(),
        },
        BuildError::NoBuild {
            package: s(),
            dir: s(),
            release: s().into(),
            debug: s().into(),
        },
        BuildError::TimedOut {
            package: s(),
            dir: s(),
            after: std::time::Duration::from_secs(1),
        },
        BuildError::Stopped {
            package: s(),
            dir: s(),
        },
        BuildError::Archive(ArchiveError::MissingSource {
            dir: s(),
            file: "Cargo.toml",
        }),
        BuildError::Signature(SignatureError::Sign {
            archive: s(),
            problem: s(),
        }),
    ]
}

fn schedule_errors() -> Vec<ScheduleError> {
    vec![
        ScheduleError::InvalidSchedule {
            schedule: s(),
            reason: s(),
        },
        ScheduleError::UnknownTrigger {
            trigger: s(),
            package: s(),
            declared: s(),
        },
        ScheduleError::DuplicateName {
            what: "cron",
            name: s(),
        },
        ScheduleError::TriggerNotRegistered {
            trigger: s(),
            package_id: s(),
        },
        ScheduleError::Store(StoreError::Closed),
        ScheduleError::Engine(EngineError::ShuttingDown),
    ]
}

fn engine_errors() -> Vec<EngineError> {
    vec![
        EngineError::Store(StoreError::Closed),
        EngineError::Workflow(WorkflowError::Empty { workflow: s() }),
        EngineError::UnknownWorkflow {
            name: s(),
            suggestion: None,
        },
        EngineError::ExecutionNotFound(Uuid::nil()),
        EngineError::WaitTimeout(Duration::from_secs(1), Uuid::nil()),
        EngineError::ShuttingDown,
        EngineError::Config(s()),
        EngineError::WorkflowPaused(s()),
    ]
}

fn task_errors() -> Vec<TaskError> {
    vec![
        TaskError::Failed(s()),
        TaskError::Transient(s()),
        TaskError::Permanent(s()),
        TaskError::Timeout(Duration::from_secs(1)),
        TaskError::Panicked(s()),
        TaskError::Context(ContextError::NotAnObject { found: "an array" }),
        TaskError::Cancelled,
    ]
}

/// One value of every variant of every public error, with the code it must answer.
fn every_error() -> Vec<(String, &'static str)> {
    fn all<E: ErrorCode + std::fmt::Debug>(v: Vec<E>) -> Vec<(String, &'static str)> {
        v.into_iter()
            .map(|e| (format!("{e:?}"), e.code()))
            .collect()
    }
    let mut out = Vec::new();
    out.extend(all(store_errors()));
    out.extend(all(engine_errors()));
    out.extend(all(workflow_errors()));
    out.extend(all(task_errors()));
    out.extend(all(vec![
        ContextError::KeyExists { key: s() },
        ContextError::KeyNotFound {
            key: s(),
            available: s(),
        },
        ContextError::TypeMismatch {
            key: s(),
            expected: "string",
            found: s(),
            message: s(),
        },
        ContextError::Serialize {
            key: s(),
            message: s(),
        },
        ContextError::NotAnObject { found: "null" },
    ]));
    out.extend(all(vec![
        RetryPolicyError::ZeroAttempts,
        RetryPolicyError::BadJitter(2.0),
        RetryPolicyError::BadMultiplier(0.5),
    ]));
    out.extend(all(vec![
        GraphError::Invalid {
            graph: s(),
            message: s(),
        },
        GraphError::Node {
            graph: s(),
            node: s(),
            error: Box::new(TaskError::Failed(s())),
        },
    ]));
    out.extend(all(manifest_errors()));
    out.extend(all(archive_errors()));
    out.extend(all(signature_errors()));
    out.extend(all(load_errors()));
    out.extend(all(manifest_errors()
        .into_iter()
        .map(PackageError::from)
        .chain(archive_errors().into_iter().map(PackageError::from))
        .chain(signature_errors().into_iter().map(PackageError::from))
        .chain(load_errors().into_iter().map(PackageError::from))
        .collect()));
    out.extend(all(registry_errors()));
    out.extend(all(schedule_errors()));
    out.extend(all(vec![
        ReconcileError::Refused(guard()),
        ReconcileError::NotLoaded(s()),
        ReconcileError::StepFailed {
            id: s(),
            package: s(),
            step: 4,
            step_name: "reactors torn down",
            cause: Box::new(StepError::Registry(RegistryError::UnknownReactor {
                tenant: s(),
                reactor: s(),
                available: vec![],
            })),
        },
        ReconcileError::Storage(Box::new(ScheduleError::Store(StoreError::Closed))),
        ReconcileError::Closed,
    ]));
    out.extend(all(build_errors()));
    out.extend(all(build_errors()
        .into_iter()
        .map(PackageError::from)
        .collect()));
    out.extend(all(vec![
        HostError::Start(EngineError::ShuttingDown),
        HostError::Drain(EngineError::ShuttingDown),
    ]));
    out.extend(all(vec![
        StepError::Schedule(ScheduleError::Store(StoreError::WriterGone)),
        StepError::Registry(RegistryError::Guard(guard())),
    ]));
    out.extend(all(vec![
        AuthError::MissingKey,
        AuthError::MalformedKey,
        AuthError::UnknownKey,
        AuthError::RevokedKey,
        AuthError::InvalidRole(s()),
        AuthError::Forbidden {
            needed: Role::Admin,
            have: Role::Read,
        },
        AuthError::WrongTenant { tenant: s() },
    ]));
    out.extend(all(vec![
        TenantError::InvalidName {
            name: s(),
            reason: s(),
        },
        TenantError::Reserved(s()),
        TenantError::NotFound(s()),
        TenantError::Io {
            path: s(),
            cause: std::io::Error::other("x"),
        },
        TenantError::Store(StoreError::TenantExists(s())),
    ]));
    out.extend(all(vec![crate::duration::parse("").expect_err("empty")]));
    out.extend(all(vec![
        ConfigError::Read {
            path: s(),
            message: s(),
        },
        ConfigError::Invalid {
            path: s(),
            message: s(),
        },
        ConfigError::NoHome,
    ]));
    out.extend(all(vec![
        SettingError::OutOfRange {
            key: s(),
            value: 0,
            min: 1,
            max: 2,
            human: "1..2",
        },
        SettingError::NotOneOf {
            key: s(),
            value: s(),
            allowed: s(),
        },
    ]));
    out.extend(all(vec![
        DaemonError::AlreadyRunning {
            service: "daemon",
            pid: None,
            path: s(),
        },
        DaemonError::Io {
            path: s(),
            cause: std::io::Error::other("x"),
        },
        DaemonError::Listen {
            path: s(),
            cause: std::io::Error::other("x"),
        },
        DaemonError::Config(ConfigError::NoHome),
        DaemonError::Unreachable {
            path: s(),
            message: s(),
        },
    ]));
    out
}

#[test]
fn every_error_answers_a_documented_code() {
    let documented = doc_rows();
    let mut used = BTreeSet::new();
    for (error, code) in every_error() {
        assert!(
            CODES.iter().any(|c| c.code == code),
            "{error} answers `{code}`, which is not in CODES"
        );
        assert!(
            documented.contains_key(code),
            "{error} answers `{code}`, which docs/errors.md does not document"
        );
        used.insert(code);
    }
    // Every documented code is answered by some error: no dead rows.
    for c in CODES {
        assert!(used.contains(c.code), "no error answers `{}`", c.code);
    }
}

#[test]
fn chosen_codes() {
    let code = |e: &dyn ErrorCode| e.code();
    assert_eq!(code(&RegistryError::Guard(guard())), "guard_refused");
    assert_eq!(code(&ReconcileError::Refused(guard())), "guard_refused");
    assert_eq!(ReconcileError::Refused(guard()).kind(), ErrorKind::Conflict);
    // Wrappers answer their inner error's code.
    let e = PackageError::from(LoadError::Archive {
        archive: s(),
        cause: ArchiveError::InvalidManifest {
            archive: s(),
            cause: ManifestError::Missing { path: s() },
        },
    });
    assert_eq!(code(&e), "manifest_missing");
    let e = StoreError::ExecutionNotFound(Uuid::nil()).in_database("SQLite database /x.db");
    assert_eq!(
        (code(&e), e.kind()),
        ("execution_not_found", ErrorKind::NotFound)
    );
    let e = StoreError::Commit(s()).in_database("SQLite database /x.db");
    assert_eq!(
        (code(&e), e.kind()),
        ("commit_failed", ErrorKind::Unavailable)
    );
    // A lost connection is "unavailable", another query failure internal.
    let codes: Vec<&str> = store_errors()[4..6].iter().map(|e| e.code()).collect();
    assert_eq!(codes, ["store_error", "store_unavailable"]);
    assert_eq!(
        code(&LoadError::AbiMismatch {
            package: s(),
            file: s(),
            found: 1,
            expected: 2,
            sdk: "0.1.0"
        }),
        "abi_mismatch"
    );
}

#[test]
fn the_guard_text_is_exact_and_causes_are_not_repeated() {
    let text = "reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first";
    assert_eq!(guard().to_string(), text);
    assert_eq!(ReconcileError::Refused(guard()).to_string(), text);
    assert_eq!(RegistryError::Guard(guard()).to_string(), text);
    // No error repeats a cause: a source's message is never already part of its error's.
    let all_messages: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(ReconcileError::Refused(guard())),
        Box::new(StoreError::Pool(s()).in_database("SQLite database /x.db")),
        Box::new(LoadError::Manifest {
            dir: s(),
            cause: ManifestError::Missing { path: s() },
        }),
        Box::new(ArchiveError::InvalidManifest {
            archive: s(),
            cause: ManifestError::Missing { path: s() },
        }),
        Box::new(WorkflowError::RetryPolicy {
            workflow: s(),
            task: s(),
            cause: RetryPolicyError::ZeroAttempts,
        }),
        Box::new(ReconcileError::StepFailed {
            id: s(),
            package: s(),
            step: 2,
            step_name: "reactor-bound CGs unbound",
            cause: Box::new(StepError::Schedule(ScheduleError::Store(
                StoreError::Closed,
            ))),
        }),
    ];
    for e in all_messages {
        let mut chain = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            chain.push(s.to_string());
            next = s.source();
        }
        for pair in chain.windows(2) {
            assert!(
                !pair[0].contains(&pair[1]),
                "'{}' repeats its source '{}'",
                pair[0],
                pair[1]
            );
        }
    }
}
