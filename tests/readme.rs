//! The README's command-line examples (` ```console ` blocks) run as they are written, with their output
//! compared (trycmd: `[..]` stands for what changes between runs, like a revision id or a duration). The
//! HTTP examples are checked by `tests/api/readme.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_readme_examples_print_what_the_readme_shows() {
    trycmd::TestCases::new()
        .register_bin("dps-allocator", trycmd::cargo::cargo_bin!("dps-allocator"))
        .case("README.md");
}

#[test]
fn the_next_policy_of_the_simulate_example_differs_from_the_shipped_one_only_as_described() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    for f in ["00-settings.toml", "20-tenants.toml"] {
        assert_eq!(
            read(&format!("policies/{f}")),
            read(&format!("docs/examples/policies-next/{f}")),
            "{f}"
        );
    }
    let hubs = read("docs/examples/policies-next/10-hubs.toml");
    let added = hubs
        .strip_prefix(read("policies/10-hubs.toml").as_str())
        .expect("the shipped hubs, then more");
    assert!(added.contains("host = \"fabrikam-weu-2.azure-devices.net\""), "{added}");
    assert_eq!(added.matches("[[hub]]").count(), 1, "{added}");
    let rules = read("docs/examples/policies-next/30-rules.toml");
    let without = rules.replace(
        "\n# New: a quarter of the fleet re-balances onto the new hub in this wave.\nrebalance_percent = 25",
        "",
    );
    assert_eq!(without, read("policies/30-rules.toml"));
}
