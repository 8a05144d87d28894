//! `cloacinactl config` (get, set, list, profiles), profile precedence and `completions`: the
//! real binary in a temporary home, no server (an unreachable port shows which server a
//! command chose).

mod common;

use std::fs;

use common::{Env, Out, mode};

/// `cloacinactl --home <env>/home ARGS`.
fn ctl(env: &Env, args: &[&str]) -> Out {
    let home = env.join("home");
    let home = home.to_str().expect("utf-8 temp path");
    let mut all = vec!["--home", home];
    all.extend_from_slice(args);
    env.run(&all)
}

fn config_text(env: &Env) -> String {
    fs::read_to_string(env.join("home/config.toml")).expect("config.toml")
}

/// The files in the home directory (a temporary file left behind would show here).
fn home_files(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.join("home"))
        .expect("home")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn set_and_get_keep_types_and_write_atomically_with_mode_0600() {
    let env = Env::new();
    // Before any set: the defaults, and no file.
    ctl(&env, &["config", "get", "daemon.poll_interval_ms"])
        .success()
        .stdout_has("500");
    assert!(!env.join("home/config.toml").exists());

    for (key, value) in [
        ("daemon.poll_interval_ms", "1000"),
        ("daemon.require_signatures", "true"),
        ("watch.directories", "~/flows, /opt/packages"),
        // A string key keeps a value that looks like a number as a string.
        ("compiler.local_addr", "9100"),
        ("database_url", "sqlite:///srv/cloacina.db"),
    ] {
        ctl(&env, &["config", "set", key, value]).success();
    }
    assert_eq!(mode(&env.join("home/config.toml")), 0o600);
    assert_eq!(home_files(&env), vec!["config.toml"], "no temporary file");
    let doc: toml::Table = config_text(&env).parse().expect("valid TOML");
    assert_eq!(
        doc["daemon"]["poll_interval_ms"],
        toml::Value::Integer(1000)
    );
    assert_eq!(
        doc["daemon"]["require_signatures"],
        toml::Value::Boolean(true)
    );
    assert_eq!(
        doc["watch"]["directories"],
        toml::Value::Array(vec!["~/flows".into(), "/opt/packages".into()])
    );
    assert_eq!(doc["compiler"]["local_addr"], toml::Value::from("9100"));

    let get = |key: &str| {
        let out = ctl(&env, &["config", "get", key]);
        out.success();
        out.stdout.trim_end().to_string()
    };
    assert_eq!(get("daemon.poll_interval_ms"), "1000");
    assert_eq!(get("daemon.require_signatures"), "true");
    assert_eq!(get("watch.directories"), "~/flows,/opt/packages");
    assert_eq!(get("compiler.local_addr"), "9100");
    let json = ctl(
        &env,
        &["config", "get", "daemon.poll_interval_ms", "-o", "json"],
    )
    .json();
    assert_eq!(json["value"], 1000);
    assert_eq!(json["source"], "file");
    let json = ctl(&env, &["config", "get", "daemon.log_level", "--json"]).json();
    assert_eq!(
        (json["value"].as_str(), json["source"].as_str()),
        (Some("info"), Some("default"))
    );

    // An existing value's type wins, and comments and layout survive an edit.
    fs::write(
        env.join("home/config.toml"),
        "# hand-written\n[daemon]\nshutdown_timeout_s = 30 # drain\nlog_level = \"info\"\n",
    )
    .expect("write");
    ctl(&env, &["config", "set", "daemon.shutdown_timeout_s", "45"]).success();
    ctl(&env, &["config", "set", "daemon.log_level", "debug"]).success();
    let text = config_text(&env);
    assert!(text.starts_with("# hand-written\n[daemon]\n"), "{text}");
    assert!(text.contains("shutdown_timeout_s = 45 # drain"), "{text}");
    assert!(text.contains("log_level = \"debug\""), "{text}");
    assert_eq!(mode(&env.join("home/config.toml")), 0o600);
}

#[test]
fn bad_values_unknown_keys_and_broken_files_change_nothing() {
    let env = Env::new();
    ctl(&env, &["config", "set", "daemon.poll_interval_ms", "800"]).success();
    let before = config_text(&env);
    for (args, says) in [
        (
            &["config", "set", "daemon.poll_interval_ms", "abc"][..],
            "daemon.poll_interval_ms takes an integer; 'abc' is not one",
        ),
        (
            &["config", "set", "daemon.poll_interval_ms", "0"],
            "daemon.poll_interval_ms = 0 is out of range",
        ),
        (
            &["config", "set", "daemon.require_signatures", "maybe"],
            "takes a boolean",
        ),
        (
            &["config", "set", "daemon.poll_intervall_ms", "5"],
            "unknown key 'daemon.poll_intervall_ms': [daemon] takes: ",
        ),
        (&["config", "set", "colour", "true"], "unknown key 'colour'"),
        (&["config", "set", "daemon", "1"], "daemon is a table"),
        (
            &["config", "get", "daemon.nope"],
            "unknown key 'daemon.nope'",
        ),
        (
            &["config", "set", "default_profile", "ghost"],
            "profile 'ghost' does not exist",
        ),
    ] {
        ctl(&env, args).code(1).stderr_has(says);
        assert_eq!(config_text(&env), before, "{args:?} changed the file");
    }
    assert_eq!(home_files(&env), vec!["config.toml"]);

    // A file that does not parse: every verb names line and column; it is never rewritten.
    let broken = "[daemon]\npoll_interval_ms = 800\n\n[profiles.prod\nserver = \"x\"\n";
    fs::write(env.join("home/config.toml"), broken).expect("write");
    for args in [
        &["config", "set", "daemon.poll_interval_ms", "900"][..],
        &["config", "get", "daemon.poll_interval_ms"],
        &["config", "list"],
        &["config", "profile", "use", "prod"],
    ] {
        ctl(&env, args)
            .code(1)
            .stderr_has("line 4, column 15")
            .stderr_has("config.toml");
        assert_eq!(config_text(&env), broken);
    }
}

#[test]
fn profiles_and_list_never_show_a_raw_key() {
    let env = Env::new();
    let key = "clk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    // Both flags are required.
    ctl(
        &env,
        &[
            "--server",
            "http://127.0.0.1:1",
            "config",
            "profile",
            "set",
            "prod",
        ],
    )
    .code(1)
    .stderr_has("needs --server URL and --api-key KEY (missing: --api-key KEY)");
    assert!(!env.join("home/config.toml").exists());
    ctl(
        &env,
        &[
            "--server",
            "http://127.0.0.1:1",
            "--api-key",
            key,
            "config",
            "profile",
            "set",
            "prod",
            "--default",
        ],
    )
    .success();
    ctl(
        &env,
        &[
            "--server",
            "http://127.0.0.1:2",
            "--api-key",
            "env:STAGING_KEY",
            "config",
            "profile",
            "set",
            "staging",
        ],
    )
    .success();
    // The key is stored as given.
    let text = config_text(&env);
    assert!(
        text.contains(key) && text.contains("env:STAGING_KEY"),
        "{text}"
    );
    assert!(text.contains("default_profile = \"prod\""), "{text}");

    let list = ctl(&env, &["config", "profile", "list"]);
    list.success()
        .stdout_has("clk_0123…")
        .stdout_has("env:STAGING_KEY")
        .stdout_has("http://127.0.0.1:2");
    let prod_line = list
        .stdout
        .lines()
        .find(|l| l.starts_with("prod"))
        .expect("prod row");
    assert!(prod_line.trim_end().ends_with('*'), "{list}");
    let json = ctl(&env, &["config", "profile", "list", "-o", "json"]).json();
    assert_eq!(json["default_profile"], "prod");
    assert_eq!(json["profiles"][0]["api_key"], "clk_0123…");
    for args in [
        &["config", "list"][..],
        &["config", "list", "-o", "json"],
        &["config", "profile", "list", "-o", "yaml"],
        &["config", "get", "profiles.prod.api_key"],
        &["config", "get", "profiles"],
    ] {
        let out = ctl(&env, args);
        out.success();
        assert!(!out.stdout.contains(key), "raw key printed\n{out}");
    }
    ctl(&env, &["config", "list"])
        .stdout_has("profiles.prod.api_key")
        .stdout_has("\"clk_0123…\"")
        .stdout_has("file");

    // use: an unknown name names the profiles that exist.
    ctl(&env, &["config", "profile", "use", "prood"])
        .code(1)
        .stderr_has("profile 'prood' does not exist; the profiles are: prod, staging");
    ctl(&env, &["config", "profile", "use", "staging"]).success();
    assert_eq!(
        ctl(&env, &["config", "get", "default_profile"])
            .stdout
            .trim(),
        "staging"
    );
    // delete: the default is cleared when it pointed there.
    ctl(&env, &["config", "profile", "delete", "prod"]).success();
    ctl(&env, &["config", "profile", "delete", "staging"])
        .success()
        .stdout_has("it was the default");
    ctl(&env, &["config", "profile", "delete", "staging"])
        .code(1)
        .stderr_has("no profile is defined");
    let text = config_text(&env);
    assert!(
        !text.contains("default_profile") && !text.contains("profiles"),
        "{text}"
    );
    ctl(&env, &["config", "profile", "list"])
        .success()
        .stdout_has("no profiles");
}

#[test]
fn server_flags_beat_profile_beats_default_profile() {
    let env = Env::new();
    let (a, b, c) = (closed_port(), closed_port(), closed_port());
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let (ua, ub, uc) = (url(a), url(b), url(c));
    for (name, server, key, default) in [
        ("a", &ua, "clk_profile_a_key_0123456789", true),
        ("b", &ub, "env:CLOACINA_TEST_SURELY_UNSET_KEY", false),
    ] {
        let mut args = vec![
            "--server",
            server,
            "--api-key",
            key,
            "config",
            "profile",
            "set",
            name,
        ];
        if default {
            args.push("--default");
        }
        ctl(&env, &args).success();
    }
    let reaches = |args: &[&str], want: &str| {
        let mut all = args.to_vec();
        all.extend(["workflow", "list"]);
        ctl(&env, &all)
            .code(2)
            .stderr_has(&format!("cannot reach the server at {want}/"));
    };
    // default_profile.
    reaches(&[], &ua);
    // --profile beats default_profile (its key, an unset variable, is replaced by --api-key).
    reaches(&["--profile", "b", "--api-key", "clk_flag"], &ub);
    // --server beats --profile; --api-key beats the profile's key.
    reaches(
        &["--profile", "b", "--server", &uc, "--api-key", "clk_flag"],
        &uc,
    );
    reaches(&["--server", &uc], &uc);
    // Without --api-key, profile b's key is decoded, and its missing variable is the error.
    let mut args = vec!["--profile", "b", "workflow", "list"];
    ctl(&env, &args)
        .code(1)
        .stderr_has("CLOACINA_TEST_SURELY_UNSET_KEY is not set");
    // An unknown profile is an error wherever it is given.
    args = vec!["--profile", "nope", "workflow", "list"];
    ctl(&env, &args).code(1).stderr_has("profile 'nope'");
    ctl(&env, &["--profile", "nope", "status"])
        .code(1)
        .stderr_has("profile 'nope'");
}

#[test]
fn completions_for_every_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = env.run(&["completions", shell]);
        out.success();
        assert!(
            out.stdout.len() > 200 && out.stdout.contains("cloacinactl"),
            "{out}"
        );
    }
    env.run(&["completions", "tcsh"]).code(1);
}
