//! Which package ships a missing kernel module on this host's distribution: the fix doctor
//! prints names the right one (Debian's stock kernel has iSCSI and LIO in its
//! `linux-image-*` package, Ubuntu moved them to `linux-modules-extra-*`, the RHEL family
//! to `kernel-modules-extra`), with the running kernel's release filled in.
//!
//! The distribution is read from the host's os-release through PID 1's root, which is the
//! host's `/` on the host itself and in a hostPID pod; when that is not readable (not root,
//! no ptrace access to PID 1), from this process's own root.

use super::Host;

/// Distribution families whose kernel packaging differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Debian and derivatives that use its kernel packages.
    Debian,
    /// Ubuntu and its derivatives.
    Ubuntu,
    /// RHEL, CentOS, Rocky, AlmaLinux, Oracle Linux, Fedora.
    RedHat,
    /// Anything else, or no os-release.
    Unknown,
}

impl Family {
    /// From os-release text: `ID` first, then each word of `ID_LIKE` (Mint says
    /// `ID_LIKE="ubuntu debian"`: Ubuntu's packaging wins).
    pub fn from_os_release(text: &str) -> Self {
        let field = |key: &str| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
                .next_back()
                .unwrap_or("")
                .to_string()
        };
        let (id, like) = (field("ID"), field("ID_LIKE"));
        std::iter::once(id.as_str())
            .chain(like.split_whitespace())
            .find_map(|id| match id.to_ascii_lowercase().as_str() {
                "ubuntu" => Some(Family::Ubuntu),
                "debian" => Some(Family::Debian),
                "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" => Some(Family::RedHat),
                _ => None,
            })
            .unwrap_or(Family::Unknown)
    }
}

/// The fix for kernel module `module` missing for kernel `release` (`None`: unknown, the
/// command line gets `$(uname -r)`).
pub fn module_fix(family: Family, release: Option<&str>, module: &str) -> String {
    let rel = release.unwrap_or("$(uname -r)");
    let load = format!("modprobe {module}");
    match family {
        Family::Debian => format!(
            "Debian's kernel package ships {module}: apt-get install linux-image-{rel} \
             (or boot a kernel whose package is installed), then {load}"
        ),
        Family::Ubuntu => format!("apt-get install linux-modules-extra-{rel}, then {load}"),
        Family::RedHat => format!("dnf install kernel-modules-extra-{rel}, then {load}"),
        Family::Unknown => format!(
            "install the package with the kernel's modules for {rel} (Debian: \
             linux-image-{rel}; Ubuntu: linux-modules-extra-{rel}; RHEL family: \
             kernel-modules-extra-{rel}), then {load}"
        ),
    }
}

/// [`module_fix`] for this host: its os-release and running kernel.
pub(super) fn host_module_fix(host: &Host, module: &str) -> String {
    let family = ["1/root", "self/root"]
        .iter()
        .flat_map(|root| ["etc/os-release", "usr/lib/os-release"].map(|f| format!("{root}/{f}")))
        .find_map(|p| std::fs::read_to_string(host.proc(&p)).ok())
        .map_or(Family::Unknown, |t| Family::from_os_release(&t));
    let release = std::fs::read_to_string(host.proc("sys/kernel/osrelease")).ok();
    let release = release.as_deref().map(str::trim).filter(|r| !r.is_empty());
    module_fix(family, release, module)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_12: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;
    const UBUNTU_2204: &str = r#"PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=jammy
"#;
    const MINT: &str = "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
    const ROCKY_9: &str = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n\
                           VERSION_ID=\"9.3\"\n";
    const FEDORA: &str = "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\n";
    const ALPINE: &str = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n";

    #[test]
    fn families_from_real_os_release_files() {
        for (text, family) in [
            (DEBIAN_12, Family::Debian),
            (UBUNTU_2204, Family::Ubuntu),
            (MINT, Family::Ubuntu),
            (ROCKY_9, Family::RedHat),
            (FEDORA, Family::RedHat),
            (ALPINE, Family::Unknown),
            ("", Family::Unknown),
        ] {
            assert_eq!(Family::from_os_release(text), family, "{text}");
        }
    }

    #[test]
    fn the_fix_names_the_distributions_package_and_the_modprobe() {
        let rel = Some("6.1.0-18-amd64");
        assert_eq!(
            module_fix(Family::Debian, rel, "iscsi_tcp"),
            "Debian's kernel package ships iscsi_tcp: apt-get install \
             linux-image-6.1.0-18-amd64 (or boot a kernel whose package is installed), then \
             modprobe iscsi_tcp"
        );
        assert_eq!(
            module_fix(Family::Ubuntu, Some("5.15.0-91-generic"), "iscsi_tcp"),
            "apt-get install linux-modules-extra-5.15.0-91-generic, then modprobe iscsi_tcp"
        );
        assert_eq!(
            module_fix(
                Family::RedHat,
                Some("5.14.0-362.el9.x86_64"),
                "iscsi_target_mod"
            ),
            "dnf install kernel-modules-extra-5.14.0-362.el9.x86_64, then modprobe \
             iscsi_target_mod"
        );
        let unknown = module_fix(Family::Unknown, None, "iscsi_tcp");
        for needle in [
            "linux-image-$(uname -r)",
            "linux-modules-extra-$(uname -r)",
            "kernel-modules-extra-$(uname -r)",
            "then modprobe iscsi_tcp",
        ] {
            assert!(unknown.contains(needle), "{unknown}");
        }
    }
}
