//! The krew manifest (plugins/byok.yaml) is in step with the kubectl-byok binary: its version is
//! the crate's, and the commands its description lists are exactly the binary's command tree.

use std::collections::BTreeSet;

use byok_operator::cli::plugin::Cli;
use clap::CommandFactory;

fn manifest() -> serde_yaml::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/byok.yaml");
    let text = std::fs::read_to_string(path).expect("plugins/byok.yaml");
    serde_yaml::from_str(&text).expect("plugins/byok.yaml is YAML")
}

/// Every runnable command path of the binary ("create", "kek rotate", ...), `help` aside.
fn commands(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let path = format!("{prefix}{}", sub.get_name());
        if sub.has_subcommands() {
            commands(sub, &format!("{path} "), out);
        } else {
            out.insert(path);
        }
    }
}

/// The command paths listed under "Commands:" in the description: the words before the first run
/// of two spaces on each indented line.
fn listed(description: &str) -> BTreeSet<String> {
    let section = description.split("Commands:").nth(1).expect("a Commands: section");
    section
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("  "))
        .filter_map(|l| l.trim().split("  ").next().filter(|c| !c.is_empty()).map(str::to_string))
        .collect()
}

#[test]
fn the_manifest_lists_exactly_the_binary_commands() {
    let m = manifest();
    let description = m["spec"]["description"].as_str().expect("spec.description");
    let mut tree = BTreeSet::new();
    commands(&Cli::command(), "", &mut tree);
    assert!(tree.contains("kek rotate") && tree.contains("eval run"), "the command tree walk: {tree:?}");
    let listed = listed(description);
    let missing: Vec<_> = tree.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&tree).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "plugins/byok.yaml's description is out of step with kubectl-byok: missing {missing:?}, not commands {extra:?}"
    );
}

#[test]
fn the_manifest_is_a_krew_plugin_of_this_version() {
    let m = manifest();
    assert_eq!(m["apiVersion"].as_str(), Some("krew.googlecontainertools.github.com/v1alpha2"));
    assert_eq!(m["kind"].as_str(), Some("Plugin"));
    assert_eq!(m["metadata"]["name"].as_str(), Some("byok"), "kubectl byok is plugin `byok`");
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(m["spec"]["version"].as_str(), Some(version.as_str()));
    assert_eq!(Cli::command().get_version(), Some(env!("CARGO_PKG_VERSION")));
    let platforms = m["spec"]["platforms"].as_sequence().expect("spec.platforms");
    assert!(!platforms.is_empty());
    for p in platforms {
        assert_eq!(p["bin"].as_str(), Some("kubectl-byok"), "{p:?}");
        let uri = p["uri"].as_str().expect("uri");
        assert!(uri.starts_with("https://") && uri.contains(&version), "{uri} is this version's archive");
        let sha = p["sha256"].as_str().expect("sha256");
        assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "sha256 {sha}");
        assert!(p["selector"]["matchLabels"]["os"].as_str().is_some(), "{p:?}");
    }
}
