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

#[test]
fn a_known_field_at_the_wrong_level_is_a_warning_and_a_reason() {
    // `currentIotHubHostName` at the top level: DPS puts it in `deviceRuntimeContext`. Before, it was
    // ignored without a word, so a re-registration test silently became a first registration.
    let server = Server::start(&[], &[]);
    let body = r#"{"enrollmentGroup":{"enrollmentGroupId":"contoso-custom-allocated-devices"},"currentIotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","deviceRuntimeContext":{"registrationId":"breakroom499-contoso-tstrsd-007"},"linkedHubs":["contoso-toasters-hub-1098.azure-devices.net","contoso-heatpumps-hub-1098.azure-devices.net"]}"#;
    let r = crate::live::post(server.addr, "/api/allocate", body, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let explained = crate::live::post(server.addr, "/api/explain", body, "");
    assert!(
        explained
            .body
            .contains("`currentIotHubHostName` is at the top level, not in `deviceRuntimeContext`"),
        "{}",
        explained.body
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("misplaced field"))
        .unwrap_or_else(|| panic!("no warning in\n{log}"));
    assert!(
        warning.contains("\"level\":\"WARN\"") && warning.contains("breakroom499-contoso-tstrsd-007"),
        "{warning}"
    );
    let decision = log
        .lines()
        .find(|l| l.contains("\"target\":\"decision\"") && l.contains("\"status\":200"))
        .expect("decision line");
    assert!(
        decision.contains("not read (decided as a first registration)"),
        "{decision}"
    );
    // In its place, it is read: a sticky re-registration.
    let right = body.replace(
        r#""currentIotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","deviceRuntimeContext":{"#,
        r#""deviceRuntimeContext":{"currentIotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","#,
    );
    let explained = crate::live::post(server.addr, "/api/explain", &right, "");
    assert!(
        !explained.body.contains("misplaced") && !explained.body.contains("top level"),
        "{}",
        explained.body
    );
}

/// Waits up to five seconds for `server`'s log to hold `n` lines containing `needle`.
fn wait_for(server: &Server, needle: &str, n: usize) -> String {
    for _ in 0..100 {
        let log = server.log();
        if log.matches(needle).count() >= n {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no {n} x {needle:?} in\n{}", server.log());
}

#[test]
fn the_policy_log_says_what_serves_and_when_the_policy_is_healthy_again() {
    let dir = crate::live::temp_dir("healthy-again");
    let good = "[[rule]]\nname = \"all\"\n";
    std::fs::write(dir.join("p.toml"), "[[rule]]\nname = \n").expect("broken");
    let server = Server::start(&["--policies", dir.to_str().expect("utf-8"), "--no-watch"], &[]);
    let hup = || {
        let _ = std::process::Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status();
    };
    // Broken at start-up: nothing serves, and the log says so instead of "the previous revision".
    let log = wait_for(&server, "policy load failed; no revision is serving", 1);
    assert!(!log.contains("the previous revision keeps serving"), "{log}");
    // Fixed: activated, and healthy again.
    std::fs::write(dir.join("p.toml"), good).expect("good");
    hup();
    wait_for(&server, "policy healthy again", 1);
    // Broken again: the good revision keeps serving; the good file back compiles to the same revision
    // (unchanged), and the log still ends on "healthy again", not on the error.
    std::fs::write(dir.join("p.toml"), "[[rule]]\nname = \n").expect("broken");
    hup();
    wait_for(&server, "the previous revision keeps serving", 1);
    std::fs::write(dir.join("p.toml"), good).expect("good");
    hup();
    let log = wait_for(&server, "policy healthy again", 2);
    let last_policy_line = log
        .lines()
        .rev()
        .find(|l| l.contains("\"target\":\"policy\""))
        .expect("policy lines");
    assert!(
        last_policy_line.contains("healthy again") && last_policy_line.contains("\"level\":\"INFO\""),
        "{last_policy_line}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_typo_in_one_fixture_fails_that_fixture_with_its_line_and_the_rest_still_run() {
    // Before: `test` stopped at the first unreadable fixture with exit 2 and no line:col.
    let dir = crate::live::temp_dir("fixture-typo");
    std::fs::create_dir_all(dir.join("tests")).expect("dir");
    for f in ["00-settings.toml", "10-hubs.toml", "20-tenants.toml", "30-rules.toml"] {
        std::fs::copy(crate::helpers::repo().join("policies").join(f), dir.join(f)).expect("copy");
    }
    for f in ["tutorial-toaster.json", "tutorial-heatpump.json"] {
        std::fs::copy(
            crate::helpers::repo().join("policies/tests").join(f),
            dir.join("tests").join(f),
        )
        .expect("copy");
    }
    let heatpump = dir.join("tests/tutorial-heatpump.json");
    let text = std::fs::read_to_string(&heatpump).expect("read");
    std::fs::write(&heatpump, text.replacen("\"request\"", "\"requets\"", 1)).expect("typo");
    std::fs::write(dir.join("tests/zz-syntax.json"), "{\"request\": {\"a\": 1,}}").expect("syntax");
    let (code, stdout, stderr) = run(&["test", dir.to_str().expect("utf-8")], &[]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("tutorial-heatpump.json:3:11: case 0: unknown field `requets`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("zz-syntax.json:1:21: not valid JSON: trailing comma"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    tutorial-toaster.json"), "{stdout}");
    assert!(stdout.contains("1 passed, 2 failed"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}
