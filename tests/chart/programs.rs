//! The external programs the driver runs (read from src/) and the Debian packages the
//! Dockerfile's runtime stage installs.

use std::collections::BTreeSet;
use std::path::Path;

/// Which Debian (bookworm) package ships each program the driver may run. A program the
/// code starts to run must be added here, and its package to the Dockerfile.
pub const PROGRAM_PACKAGES: &[(&str, &str)] = &[
    ("lvm", "lvm2"),
    ("lvs", "lvm2"),
    ("vgs", "lvm2"),
    ("pvs", "lvm2"),
    ("lvcreate", "lvm2"),
    ("lvremove", "lvm2"),
    ("lvextend", "lvm2"),
    ("lvresize", "lvm2"),
    ("lvchange", "lvm2"),
    ("lvrename", "lvm2"),
    ("vgchange", "lvm2"),
    ("dmsetup", "dmsetup"),
    ("iscsiadm", "open-iscsi"),
    ("tgtadm", "tgt"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mke2fs", "e2fsprogs"),
    ("resize2fs", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("tune2fs", "e2fsprogs"),
    ("mkfs.xfs", "xfsprogs"),
    ("xfs_growfs", "xfsprogs"),
    ("xfs_repair", "xfsprogs"),
    ("xfs_admin", "xfsprogs"),
    ("blkid", "util-linux"),
    ("blockdev", "util-linux"),
    ("wipefs", "util-linux"),
    ("blkdiscard", "util-linux"),
    ("lsblk", "util-linux"),
    ("findmnt", "util-linux"),
    ("fsfreeze", "util-linux"),
    ("nsenter", "util-linux"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("losetup", "mount"),
    ("udevadm", "udev"),
    ("modprobe", "kmod"),
    ("sync", "coreutils"),
    ("dd", "coreutils"),
];

/// Packages installed for a program that the driver does not run itself, with the reason.
pub const INDIRECT_PACKAGES: &[(&str, &str)] = &[(
    "thin-provisioning-tools",
    "lvm runs thin_check/thin_repair when it activates a thin pool (StorageClass thinPool)",
)];

/// Programs named in non-test code under `src/`: the literal argument of every
/// `Cmd::new(..)` (or the string constant it names) and every `"nsenter"` literal.
pub fn programs_in(src: &Path) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for file in rust_files(src)? {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        // Unit tests sit at the end of each file, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for call in code.split("Cmd::new(").skip(1) {
            let arg = call.split(')').next().unwrap_or_default().trim();
            let program = match arg.strip_prefix('"') {
                Some(lit) => lit.trim_end_matches('"').to_string(),
                None => constant(code, arg).ok_or_else(|| {
                    format!(
                        "{}: Cmd::new({arg}): use a string literal or a `const {arg}: &str` \
                         in the same file, so this test can see the program",
                        file.display()
                    )
                })?,
            };
            out.insert(program);
        }
        if code.contains("\"nsenter\"") {
            out.insert("nsenter".to_string());
        }
    }
    Ok(out)
}

/// The value of `const NAME: &str = "value";` in `code`.
fn constant(code: &str, name: &str) -> Option<String> {
    let name = name.rsplit("::").next()?;
    let decl = format!("const {name}: &str = \"");
    let start = code.find(&decl)? + decl.len();
    let len = code[start..].find('"')?;
    Some(code[start..start + len].to_string())
}

fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The Dockerfile's stages, each as (the `FROM` line, its instructions joined per line
/// continuation).
pub fn stages(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        // Comments are dropped, even inside a continued instruction (as docker does).
        if line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    joined.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for instr in joined {
        if instr.to_ascii_uppercase().starts_with("FROM ") {
            out.push((instr, Vec::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push(instr);
        }
    }
    out
}

/// Packages installed by `apt-get install` in one stage's instructions.
pub fn apt_packages(instructions: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for instr in instructions {
        for command in instr.split("&&") {
            let words: Vec<&str> = command.split_whitespace().collect();
            let Some(i) = words.windows(2).position(|w| w == ["apt-get", "install"]) else {
                continue;
            };
            out.extend(
                words[i + 2..]
                    .iter()
                    .filter(|w| !w.starts_with('-') && !w.starts_with('$'))
                    .map(|w| w.to_string()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockerfile_stages_and_packages() {
        let df = "FROM a AS b\nRUN x\n# c\nFROM d\nRUN apt-get update && \\\n  \
                  apt-get install -y --no-install-recommends p1 \\\n  p2 && rm -rf y\n";
        let s = stages(df);
        assert_eq!(s.len(), 2);
        assert_eq!(
            apt_packages(&s[1].1).into_iter().collect::<Vec<_>>(),
            ["p1", "p2"]
        );
        assert_eq!(
            constant("const LVM: &str = \"lvm\";", "self::LVM").as_deref(),
            Some("lvm")
        );
    }

    #[test]
    fn finds_programs_in_code_but_not_in_unit_tests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/a.rs"),
            "const TGT: &str = \"tgtadm\";\nfn f() { Cmd::new(\"iscsiadm\"); Cmd::new(TGT); }\n\
             #[cfg(test)]\nmod tests { fn g() { Cmd::new(\"sh\"); } }\n",
        )
        .unwrap();
        let found: Vec<_> = programs_in(dir.path()).unwrap().into_iter().collect();
        assert_eq!(found, ["iscsiadm", "tgtadm"]);
        std::fs::write(dir.path().join("b.rs"), "fn f(p: &str) { Cmd::new(p); }").unwrap();
        assert!(programs_in(dir.path()).unwrap_err().contains("Cmd::new(p)"));
    }
}
