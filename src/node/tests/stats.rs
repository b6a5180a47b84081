//! NodeGetVolumeStats.

use super::*;

async fn stats(f: &Fixture, v: &Vol, path: &str) -> Result<NodeGetVolumeStatsResponse, Code> {
    f.svc
        .node_get_volume_stats(Request::new(NodeGetVolumeStatsRequest {
            volume_id: v.id.into(),
            volume_path: path.into(),
            staging_target_path: String::new(),
        }))
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.code())
}

#[tokio::test]
async fn mounted_volumes_report_bytes_inodes_and_condition() {
    let f = Fixture::new();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.publish(
        &A,
        "pods/p1/vol",
        mount_cap("", Mode::SingleNodeWriter),
        false,
    )
    .await
    .unwrap();
    let s = stats(&f, &A, &f.path("pods/p1/vol")).await.unwrap();
    assert_eq!(s.usage.len(), 2);
    assert_eq!(s.usage[0].unit, volume_usage::Unit::Bytes as i32);
    assert_eq!(s.usage[1].unit, volume_usage::Unit::Inodes as i32);
    assert!(s.usage[0].total > 0 && s.usage[1].total > 0);
    let c = s.volume_condition.unwrap();
    assert!(!c.abnormal, "{}", c.message);
    // The session fails (storage node down): abnormal, saying so.
    f.sysfs.set_session_state(1, "FAILED");
    let c = stats(&f, &A, &f.path("pods/p1/vol"))
        .await
        .unwrap()
        .volume_condition
        .unwrap();
    assert!(c.abnormal && c.message.contains("FAILED"), "{}", c.message);
    // The disk is gone altogether.
    f.sysfs.remove_session(1);
    let c = stats(&f, &A, &f.path("pods/p1/vol"))
        .await
        .unwrap()
        .volume_condition
        .unwrap();
    assert!(c.abnormal && c.message.contains("gone"), "{}", c.message);
}

#[tokio::test]
async fn block_volumes_report_their_size() {
    let f = Fixture::new();
    let mut req = f.stage_req(&B, "", Mode::SingleNodeWriter);
    req.volume_capability = Some(block_cap());
    f.stage(req).await.unwrap();
    f.publish(&B, "pods/p1/dev", block_cap(), false)
        .await
        .unwrap();
    let s = stats(&f, &B, &f.path("pods/p1/dev")).await.unwrap();
    assert_eq!(s.usage.len(), 1);
    assert_eq!(s.usage[0].total, 196608 * 512);
    assert!(!s.volume_condition.unwrap().abnormal);
}

#[tokio::test]
async fn missing_or_unmounted_paths() {
    let f = Fixture::new();
    assert_eq!(
        stats(&f, &A, &f.path("nowhere")).await.unwrap_err(),
        Code::NotFound
    );
    assert_eq!(
        stats(&f, &A, "some/path").await.unwrap_err(),
        Code::NotFound
    );
    assert_eq!(stats(&f, &A, "").await.unwrap_err(), Code::InvalidArgument);
    assert_eq!(
        stats(&f, &A, "/a/../b").await.unwrap_err(),
        Code::InvalidArgument
    );
    std::fs::create_dir_all(f.path("empty")).unwrap();
    let c = stats(&f, &A, &f.path("empty"))
        .await
        .unwrap()
        .volume_condition
        .unwrap();
    assert!(
        c.abnormal && c.message.contains("not mounted"),
        "{}",
        c.message
    );
}
