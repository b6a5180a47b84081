//! Tearing LIO's configuration down by hand, the way a reboot loses it: every target whose
//! IQN starts with a prefix, then the backstores of an HBA.

use std::path::Path;

/// configfs's target directory.
const TARGET: &str = "/sys/kernel/config/target";

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn rmdir(p: &Path) -> Result<(), String> {
    std::fs::remove_dir(p).map_err(|e| format!("rmdir {}: {e}", p.display()))
}

fn unlink(p: &Path) -> Result<(), String> {
    std::fs::remove_file(p).map_err(|e| format!("rm {}: {e}", p.display()))
}

/// Removes every iSCSI target whose IQN starts with `prefix` (ACLs, LUNs, portals, TPGs),
/// then every backstore of `hba` and the HBA itself. Returns how many targets went.
pub fn clear(prefix: &str, hba: &str) -> Result<usize, String> {
    let iscsi = Path::new(TARGET).join("iscsi");
    let mut n = 0;
    for target in entries(&iscsi) {
        let name = target.file_name().map(|f| f.to_string_lossy().into_owned());
        if !name.is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        for tpg in entries(&target).into_iter().filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("tpgt_"))
        }) {
            // The kernel refuses little while a TPG is enabled, but disabling first is what
            // targetcli does too.
            let _ = std::fs::write(tpg.join("enable"), "0");
            for acl in entries(&tpg.join("acls")) {
                for mapped in entries(&acl).into_iter().filter(|p| {
                    p.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with("lun_"))
                }) {
                    for link in entries(&mapped).into_iter().filter(|p| p.is_symlink()) {
                        unlink(&link)?;
                    }
                    rmdir(&mapped)?;
                }
                rmdir(&acl)?;
            }
            for lun in entries(&tpg.join("lun")) {
                for link in entries(&lun).into_iter().filter(|p| p.is_symlink()) {
                    unlink(&link)?;
                }
                rmdir(&lun)?;
            }
            for np in entries(&tpg.join("np")) {
                rmdir(&np)?;
            }
            rmdir(&tpg)?;
        }
        rmdir(&target)?;
        n += 1;
    }
    let hba = Path::new(TARGET).join("core").join(hba);
    if hba.exists() {
        for bs in entries(&hba)
            .into_iter()
            .filter(|p| p.join("enable").exists())
        {
            rmdir(&bs)?;
        }
        rmdir(&hba)?;
    }
    Ok(n)
}
