//! The install instructions agree with the chart: the top README, the chart's README and
//! its NOTES name the chart's default volume group and label the namespace for privileged
//! pods (a user following any of them must not end up with Pending claims or no pods).

use super::*;

/// The value after `key` in `text` (up to whitespace or a backtick), every occurrence.
fn values_after<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.match_indices(key)
        .map(|(i, _)| {
            let rest = &text[i + key.len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '`' || c == '/')
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(render::repo_root().join(rel)).unwrap()
}

#[test]
fn install_instructions_use_the_charts_volume_group_and_label_the_namespace() {
    let values = read("deploy/helm/lvm-iscsi-csi/values.yaml");
    let default_vg = values_after(&values, "defaultVolumeGroup: ");
    assert_eq!(default_vg.len(), 1, "{default_vg:?}");
    let vg = default_vg[0];
    let top = read("README.md");
    let chart = read("deploy/helm/lvm-iscsi-csi/README.md");
    let set = values_after(&top, "controller.defaultVolumeGroup=");
    assert!(!set.is_empty(), "README.md sets no default volume group");
    for (doc, names) in [
        ("README.md --set", set),
        ("README.md vgcreate", values_after(&top, "vgcreate ")),
        ("chart README vgcreate", values_after(&chart, "vgcreate ")),
    ] {
        assert!(
            names.iter().all(|n| *n == vg),
            "{doc} names {names:?}, the chart's default is {vg}"
        );
    }
    let label = "pod-security.kubernetes.io/enforce=privileged";
    let notes = &case("default").notes;
    for (doc, text) in [
        ("README.md", &top),
        ("chart README", &chart),
        ("NOTES", notes),
    ] {
        assert!(
            text.contains(&format!("kubectl label namespace {NAMESPACE} {label}")),
            "{doc} does not label the namespace {label}"
        );
    }
}
