//! The volume, VG and thin pool gauges follow create, publish, unpublish and delete.

use crate::metrics::Metrics;

use super::*;

/// The value of `series` (name and labels) in the exposition `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Refreshes into a fresh registry and renders it.
async fn gauges(h: &Harness) -> String {
    let metrics = Metrics::new();
    h.svc.gauges.refresh(&metrics).await;
    metrics.render()
}

#[tokio::test]
async fn gauges_follow_the_volumes() {
    let h = Harness::new().await;
    let text = gauges(&h).await;
    assert_eq!(
        sample(&text, r#"lvm_iscsi_csi_volumes{vg="csivg"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"lvm_iscsi_csi_volume_group_size_bytes{vg="csivg"}"#
        ),
        Some(GIB as f64)
    );
    let free_before = sample(
        &text,
        r#"lvm_iscsi_csi_volume_group_free_bytes{vg="csivg"}"#,
    );
    assert_eq!(free_before, Some((GIB - 256 * MIB) as f64), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"lvm_iscsi_csi_thin_pool_size_bytes{vg="csivg",pool="pool0"}"#
        ),
        Some((256 * MIB) as f64)
    );
    assert_eq!(
        sample(
            &text,
            r#"lvm_iscsi_csi_thin_pool_free_bytes{vg="csivg",pool="pool0"}"#
        ),
        Some((256 * MIB) as f64)
    );

    let v = h.create(create_req("pvc-1", 64 * MIB)).await;
    let text = gauges(&h).await;
    assert_eq!(
        sample(&text, r#"lvm_iscsi_csi_volumes{vg="csivg"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"lvm_iscsi_csi_published_volumes{vg="csivg"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"lvm_iscsi_csi_volume_group_free_bytes{vg="csivg"}"#
        ),
        Some((GIB - 320 * MIB) as f64)
    );

    h.publish(publish_req(&v.volume_id, "node-1"))
        .await
        .unwrap();
    let text = gauges(&h).await;
    assert_eq!(
        sample(&text, r#"lvm_iscsi_csi_published_volumes{vg="csivg"}"#),
        Some(1.0)
    );

    h.unpublish(&v.volume_id, "node-1").await.unwrap();
    h.delete(&v.volume_id).await.unwrap();
    let text = gauges(&h).await;
    assert_eq!(
        sample(&text, r#"lvm_iscsi_csi_volumes{vg="csivg"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"lvm_iscsi_csi_published_volumes{vg="csivg"}"#),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_failed_listing_keeps_the_old_values() {
    let h = Harness::new().await;
    let metrics = Metrics::new();
    h.svc.gauges.refresh(&metrics).await;
    h.create(create_req("pvc-1", 64 * MIB)).await;
    h.lvm.fail(
        "lvs --reportformat json",
        Output::failed(5, "  Volume group \"csivg\" not found\n"),
    );
    h.svc.gauges.refresh(&metrics).await;
    let text = metrics.render();
    assert_eq!(
        sample(&text, r#"lvm_iscsi_csi_volumes{vg="csivg"}"#),
        Some(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_changes_shares_one_refresh() {
    let h = Harness::new().await;
    // The gauges' own `vgs` (of every VG; CreateVolume's names its VG).
    let refreshes = || {
        h.calls("vgs")
            .iter()
            .filter(|c| c.ends_with("vg_extent_size"))
            .count()
    };
    for i in 0..5 {
        h.create(create_req(&format!("pvc-{i}"), 8 * MIB)).await;
    }
    assert_eq!(refreshes(), 0, "not before the delay");
    tokio::time::sleep(crate::controller::gauges::REFRESH_DELAY * 2).await;
    assert_eq!(refreshes(), 1);
    h.create(create_req("pvc-5", 8 * MIB)).await;
    tokio::time::sleep(crate::controller::gauges::REFRESH_DELAY * 2).await;
    assert_eq!(refreshes(), 2, "a later change refreshes again");
}
