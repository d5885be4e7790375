//! An operator's first hour: a wrong path is one line and exit 2, not a server answering 503 for ever;
//! boolean environment twins take what Compose and Kubernetes files write (1/0, yes/no, on/off); an
//! invalid environment value is named as the variable the operator set, not a flag they never typed.

use crate::live::{Server, get, run_bin as run};

#[test]
fn a_policy_directory_that_does_not_exist_is_exit_2_with_one_line() {
    for args in [
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            "/nonexistent/policies",
        ][..],
        &["check", "/nonexistent/policies"],
        &["test", "/nonexistent/policies"],
        &["explain", "--policies", "/nonexistent/policies", "-"],
        &["simulate", "--policies", "/nonexistent/policies", "--synthetic", "10"],
    ] {
        let (code, stdout, stderr) = run(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("/nonexistent/policies") && stderr.contains("does not exist"),
            "{stderr}"
        );
    }
}

#[test]
fn boolean_environment_twins_take_1_0_yes_no_on_off() {
    for value in ["1", "yes", "on", "true", "0", "no", "off", "false"] {
        let server = Server::start(&[], &[("DPS_ALLOCATOR_NO_WATCH", value)]);
        assert_eq!(get(server.addr, "/healthz").status, 200, "{value}");
        let watching = !server.log().contains("\"watch\":false");
        assert_eq!(
            watching,
            ["0", "no", "off", "false"].contains(&value),
            "{value}: {}",
            server.log()
        );
    }
}

#[test]
fn an_invalid_environment_value_names_the_variable() {
    let (code, _, stderr) = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("DPS_ALLOCATOR_NO_WATCH", "maybe")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("DPS_ALLOCATOR_NO_WATCH=\"maybe\""), "{stderr}");
    let (code, _, stderr) = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("DPS_ALLOCATOR_LOG_FORMAT", "xml")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("DPS_ALLOCATOR_LOG_FORMAT") && stderr.contains("auto, pretty, json"),
        "{stderr}"
    );
}
