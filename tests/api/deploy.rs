//! Deployment files: the Azure Functions configuration carries exactly the keys the host reads, the
//! Grafana dashboard queries only metrics the service exports, the Kubernetes ConfigMap is the shipped
//! policy, and (when CI has built it) the Functions zip is laid out for zip deploy and its binary serves.

use std::collections::BTreeSet;
use std::process::Command;

use actix_web::test::TestRequest;
use serde_json::Value;

use crate::helpers::{repo, send};
use crate::live::{get, post, temp_dir};

fn json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(path)).expect("read")).expect("json")
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().expect("object").keys().map(String::as_str).collect()
}

#[test]
fn host_json_carries_exactly_the_custom_handler_keys_the_functions_host_reads() {
    let host = json("deploy/azure-functions/host.json");
    assert_eq!(
        keys(&host),
        BTreeSet::from(["version", "extensionBundle", "customHandler"])
    );
    assert_eq!(host["version"], "2.0");
    assert_eq!(keys(&host["extensionBundle"]), BTreeSet::from(["id", "version"]));
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    let handler = &host["customHandler"];
    assert_eq!(
        keys(handler),
        BTreeSet::from(["description", "enableForwardingHttpRequest"])
    );
    assert_eq!(handler["enableForwardingHttpRequest"], true);
    assert_eq!(
        keys(&handler["description"]),
        BTreeSet::from(["defaultExecutablePath", "workingDirectory", "arguments"])
    );
    assert_eq!(handler["description"]["defaultExecutablePath"], "dps-allocator");
    let args: Vec<&str> = handler["description"]["arguments"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "serve");
    // The arguments must be ones `serve` accepts (the package test runs them for real).
    let help = Command::new(crate::live::BIN)
        .args(["serve", "--help"])
        .output()
        .expect("runs");
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            String::from_utf8_lossy(&help.stdout).contains(flag),
            "serve does not know {flag}"
        );
    }
}

#[test]
fn function_json_is_an_http_trigger_with_function_keys_and_an_http_output() {
    let f = json("deploy/azure-functions/allocate/function.json");
    assert_eq!(keys(&f), BTreeSet::from(["bindings"]));
    let b = f["bindings"].as_array().expect("bindings");
    assert_eq!(b.len(), 2);
    assert_eq!(
        keys(&b[0]),
        BTreeSet::from(["type", "direction", "name", "authLevel", "methods"])
    );
    assert_eq!(
        (b[0]["type"].as_str(), b[0]["direction"].as_str(), b[0]["name"].as_str()),
        (Some("httpTrigger"), Some("in"), Some("req"))
    );
    assert_eq!(b[0]["authLevel"], "function");
    assert_eq!(b[0]["methods"], serde_json::json!(["post"]));
    assert_eq!(keys(&b[1]), BTreeSet::from(["type", "direction", "name"]));
    assert_eq!(
        (b[1]["type"].as_str(), b[1]["direction"].as_str(), b[1]["name"].as_str()),
        (Some("http"), Some("out"), Some("res"))
    );
}

#[actix_web::test]
async fn the_dashboard_and_alerts_query_only_metrics_the_service_exports() {
    // A service as it runs: loaded by a reload, with the cache on, after an assignment and a rejection
    // (a labelled metric family only appears once it has a sample).
    let service = dps_allocator::server::Service::new(
        dps_allocator::server::reload::PolicySource::Dir(repo().join("policies")),
        Some(crate::helpers::test_geoip()),
        dps_allocator::server::cache::DecisionCache::new(
            64,
            dps_allocator::server::cache::DEFAULT_MAX_BYTES,
            std::time::Duration::from_secs(60),
        ),
        dps_allocator::server::keys::ApiKeys::none(),
    )
    .expect("metrics");
    service.reload(dps_allocator::server::reload::Trigger::Startup);
    let app = crate::helpers::app_with(service).await;
    for fixture in ["tutorial-toaster.json", "rejection-revoked-firmware.json"] {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(repo().join("policies/tests").join(fixture)).expect("read"))
                .expect("json");
        send(
            &app,
            TestRequest::post()
                .uri("/api/allocate")
                .set_payload(v["request"].to_string()),
        )
        .await;
    }
    let text = String::from_utf8(send(&app, TestRequest::get().uri("/metrics")).await.body).expect("utf-8");
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let mut used = BTreeSet::new();
    for file in [
        "deploy/grafana/dashboards/dps-allocator.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let body = std::fs::read_to_string(repo().join(file)).expect("read");
        for (i, _) in body.match_indices("dps_allocator_") {
            let name: String = body[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, s| n.strip_suffix(s).map_or(n.clone(), str::to_owned));
            used.insert((file, base));
        }
    }
    assert!(used.len() > 8);
    for (file, name) in used {
        assert!(
            exported.contains(&name),
            "{file} queries {name}, which the service does not export"
        );
    }
}

#[test]
fn the_kubernetes_configmap_is_the_shipped_policy_directory() {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/configmap-policies.yaml")).expect("read");
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.lines().skip_while(|l| *l != "data:").skip(1) {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) {
            files.push((name.to_owned(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(line.strip_prefix("    ").unwrap_or(""));
            body.push('\n');
        }
    }
    let mut shipped: Vec<_> = std::fs::read_dir(repo().join("policies"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    shipped.sort();
    assert_eq!(files.len(), shipped.len(), "run scripts/configmap.sh");
    for ((name, body), path) in files.iter().zip(&shipped) {
        assert_eq!(name, path.file_name().and_then(|n| n.to_str()).expect("name"));
        let want: String = std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(|l| format!("{}\n", l.trim_end()))
            .collect();
        assert_eq!(body, &want, "{name} differs from policies/: run scripts/configmap.sh");
    }
}

/// Runs when `DPS_ALLOCATOR_PACKAGE` names a zip built by scripts/package-functions.sh (CI does).
#[test]
fn the_functions_zip_is_laid_out_for_zip_deploy_and_its_binary_serves() {
    let Some(zip) = std::env::var_os("DPS_ALLOCATOR_PACKAGE") else {
        eprintln!("skipped: set DPS_ALLOCATOR_PACKAGE to a zip from scripts/package-functions.sh");
        return;
    };
    let listing = Command::new("unzip")
        .args(["-Z", "-l"])
        .arg(&zip)
        .output()
        .expect("unzip runs");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let entry = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .map(str::to_owned)
    };
    for name in [
        "host.json",
        "allocate/function.json",
        "dps-allocator",
        "policies/30-rules.toml",
    ] {
        assert!(entry(name).is_some(), "{name} missing from the zip:\n{listing}");
    }
    let bin = entry("dps-allocator").expect("binary");
    assert!(bin.starts_with("-rwx"), "the binary lost its executable bit: {bin}");
    assert!(
        !listing.contains("policies/tests"),
        "fixtures do not belong in the package"
    );
    let (dir, mut child, addr) = start_package(&zip, "functions-zip");
    let root = get(addr, "/");
    let toaster = std::fs::read_to_string(repo().join("policies/tests/tutorial-toaster.json")).expect("fixture");
    let request: Value = serde_json::from_str(&toaster).expect("json");
    let answer = post(
        addr,
        "/api/allocate?code=function-key",
        &request["request"].to_string(),
        "",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(root.status, 200);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("contoso-toasters-hub-1098.azure-devices.net"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Unzips a Functions package and starts its binary the way the Functions host does (host.json's
/// executable and arguments, in the app root, with FUNCTIONS_CUSTOMHANDLER_PORT set): the directory, the
/// process and its address.
fn start_package(zip: &std::ffi::OsStr, name: &str) -> (std::path::PathBuf, std::process::Child, std::net::SocketAddr) {
    let dir = temp_dir(name);
    let out = Command::new("unzip")
        .arg("-q")
        .arg(zip)
        .arg("-d")
        .arg(&dir)
        .output()
        .expect("unzip");
    assert!(out.status.success());
    let host = json_at(&dir.join("host.json"));
    let args: Vec<String> = host["customHandler"]["description"]["arguments"]
        .as_array()
        .expect("arguments")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(dir.join("dps-allocator"))
        .args(&args)
        .current_dir(&dir)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the packaged binary starts");
    let log = std::env::temp_dir().join(format!("dps-package-{}-{name}.log", std::process::id()));
    let (listening, _) = crate::live::read_addresses(child.stdout.take().expect("stdout"), &log, false);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(listening, Some(addr));
    (dir, child, addr)
}

/// Runs when `DPS_ALLOCATOR_PACKAGE_FENCES` names a zip built by scripts/package-functions.sh from a policy
/// directory with `fences/` (CI builds one from tests/fixtures/residency): the whole directory is in it,
/// its fixtures are not, `check` passes on the packaged copy, and a device is placed by a fence.
#[test]
fn a_functions_zip_carries_the_whole_policy_directory_and_places_by_its_fences() {
    let Some(zip) = std::env::var_os("DPS_ALLOCATOR_PACKAGE_FENCES") else {
        eprintln!("skipped: set DPS_ALLOCATOR_PACKAGE_FENCES to a zip built with POLICIES=tests/fixtures/residency");
        return;
    };
    let (dir, mut child, addr) = start_package(&zip, "functions-zip-fences");
    assert!(
        dir.join("policies/fences/nordics.geojson").is_file(),
        "fences/ left out"
    );
    assert!(
        !dir.join("policies/tests").exists(),
        "fixtures do not belong in the package"
    );
    let check = Command::new(dir.join("dps-allocator"))
        .args(["check", "policies"])
        .current_dir(&dir)
        .output()
        .expect("check runs");
    let fixture =
        std::fs::read_to_string(repo().join("tests/fixtures/residency/tests/residency.json")).expect("fixture");
    let cases: Value = serde_json::from_str(&fixture).expect("json");
    let lillehammer = cases
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["request"]["deviceRuntimeContext"]["registrationId"] == "meter-lillehammer")
        .expect("a device inside the Nordic fence");
    let answer = post(
        addr,
        "/api/allocate?code=function-key",
        &lillehammer["request"].to_string(),
        "",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("nordic.azure-devices.net"), "{}", answer.body);
    let _ = std::fs::remove_dir_all(dir);
}

fn json_at(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

#[test]
fn the_dashboard_imports_into_any_grafana_and_follows_its_variables() {
    let d = json("deploy/grafana/dashboards/dps-allocator.json");
    // Grafana's import asks for a Prometheus data source (`__inputs`), and the panels take whichever the
    // `datasource` variable names, so nothing depends on a data source uid of ours.
    assert_eq!(d["__inputs"][0]["type"], "datasource");
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    let vars: Vec<(&str, &str)> = d["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| (v["name"].as_str().expect("name"), v["type"].as_str().expect("type")))
        .collect();
    assert_eq!(
        vars,
        [
            ("datasource", "datasource"),
            ("job", "query"),
            ("namespace", "query"),
            ("instance", "query")
        ]
    );
    for v in d["templating"]["list"].as_array().expect("variables").iter().skip(1) {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{v}");
        assert_eq!(v["allValue"], ".*", "a namespace-less scrape still matches: {v}");
    }
    // The dashboard JSON model: every panel has an id, a type, a title, a grid position and targets.
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate panel id {}",
            p["id"]
        );
        for key in ["type", "title"] {
            assert!(p[key].is_string(), "{key} of {p}");
        }
        for key in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][key].is_u64(), "gridPos.{key} of {}", p["title"]);
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            let expr = t["expr"].as_str().expect("expr");
            let metrics = expr.matches("dps_allocator_").count();
            let selected = expr
                .matches(r#"job=~"$job",namespace=~"$namespace",instance=~"$instance""#)
                .count();
            assert_eq!(metrics, selected, "every metric follows the variables: {expr}");
        }
    }
    assert!(d["uid"].is_string() && d["schemaVersion"].is_u64());
}

#[test]
fn the_optional_pod_monitor_scrapes_the_deployments_admin_port() {
    let monitor =
        std::fs::read_to_string(repo().join("deploy/kubernetes/prometheus-operator/podmonitor.yaml")).expect("read");
    let deployment = std::fs::read_to_string(repo().join("deploy/kubernetes/deployment.yaml")).expect("read");
    assert!(
        monitor.contains("apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\n"),
        "{monitor}"
    );
    assert!(monitor.contains("    matchLabels:\n      app.kubernetes.io/name: dps-allocator\n"));
    assert!(
        deployment.contains("app.kubernetes.io/name: dps-allocator"),
        "the pods carry the selected label"
    );
    assert!(monitor.contains("    - port: admin\n      path: /metrics\n"));
    assert!(
        deployment.contains("- name: admin\n              containerPort: 9180"),
        "the admin port is named"
    );
    let kustomization = std::fs::read_to_string(repo().join("deploy/kubernetes/kustomization.yaml")).expect("read");
    assert!(
        !kustomization.contains("podmonitor"),
        "optional: the CRD may not exist in the cluster"
    );
}
