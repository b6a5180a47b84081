//! `doctor compute`: what node mode needs on a node that runs pods. iscsiadm runs, iscsid
//! listens, the initiator name is present and valid, iscsi_tcp is loaded or loadable, the
//! kubelet directory exists.
//!
//! `iscsiadm -m session` alone does not show whether iscsid runs: it reads sysfs and exits
//! 21 ("no active sessions") with iscsid stopped too (seen in the kernel lab). iscsid is
//! therefore found by its listening socket in the host's `/proc/net/unix`.
//!
//! In `host` iscsiadm mode the node plugin works on the host through PID 1 (nsenter), so the
//! checks do too: tools through the runner's nsenter prefix, files under `/proc/1/root`, the
//! unix socket table of PID 1's network namespace.

use std::path::{Path, PathBuf};

use super::procfs::{self, InitiatorName};
use super::{distro, one_line, read, Finding, Host};
use crate::cli::{DoctorComputeArgs, IscsiadmMode};
use crate::domain::Iqn;
use crate::exec::Cmd;

/// iscsiadm's exit code for "no objects found" (no sessions).
const ISCSI_ERR_NO_OBJS_FOUND: i32 = 21;

/// Runs every compute check.
pub async fn check(host: &Host, args: &DoctorComputeArgs) -> Vec<Finding> {
    let view = View::new(host, args.iscsiadm_mode);
    vec![
        iscsiadm(host, args.iscsiadm_mode).await,
        iscsid(&view),
        initiator_name(&view, &args.initiator_name_file),
        iscsi_tcp(host).await,
        kubelet_dir(&view, &args.kubelet_dir),
    ]
}

/// Where the host's files and tables are, as this process sees them.
struct View {
    /// The host's root directory (`/`, or `/proc/1/root` in host mode).
    root: PathBuf,
    /// The unix socket table of the host's network namespace.
    net_unix: PathBuf,
}

impl View {
    fn new(host: &Host, mode: IscsiadmMode) -> Self {
        match mode {
            IscsiadmMode::Host => View {
                root: host.proc("1/root"),
                net_unix: host.proc("1/net/unix"),
            },
            IscsiadmMode::Direct => View {
                root: PathBuf::from("/"),
                net_unix: host.proc("net/unix"),
            },
        }
    }

    /// A host path as this process reaches it.
    fn path(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
}

/// iscsiadm runs (in the host's namespaces in host mode) and lists the sessions.
async fn iscsiadm(host: &Host, mode: IscsiadmMode) -> Finding {
    const NAME: &str = "iscsiadm";
    let out = match host
        .output(Cmd::new("iscsiadm").args(["-m", "session"]))
        .await
    {
        Ok(out) => out,
        Err(e) => {
            return Finding::fail(
                NAME,
                format!("iscsiadm cannot run: {e}"),
                "install open-iscsi",
            )
        }
    };
    if mode == IscsiadmMode::Host && out.stderr.trim_start().starts_with("nsenter:") {
        return Finding::fail(
            NAME,
            format!(
                "cannot run iscsiadm in the host's namespaces: {}",
                one_line(&out.stderr)
            ),
            "install open-iscsi on the host and give the pod hostPID and privileged, \
             or use --iscsiadm-mode direct",
        );
    }
    match out.code {
        0 => {
            // One line per session: `tcp: [1] 10.0.0.1:3260,1 iqn... (non-flash)`.
            let n = out
                .stdout_str()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count();
            Finding::ok(NAME, format!("{n} session(s) open"))
        }
        ISCSI_ERR_NO_OBJS_FOUND => Finding::ok(NAME, "no sessions open"),
        code => Finding::fail(
            NAME,
            format!(
                "iscsiadm -m session failed (exit {code}): {}",
                one_line(&out.stderr)
            ),
            "run `iscsiadm -m session` as root on this host and fix what it reports",
        ),
    }
}

/// iscsid listens on its socket (iscsiadm talks to it for every login and logout).
fn iscsid(view: &View) -> Finding {
    const NAME: &str = "iscsid";
    let fix = "systemctl enable --now iscsid";
    match read(&view.net_unix) {
        Ok(table) if procfs::unix_listening(&table, procfs::ISCSID_SOCKET) => {
            Finding::ok(NAME, format!("listening on {}", procfs::ISCSID_SOCKET))
        }
        Ok(_) => Finding::fail(
            NAME,
            format!(
                "iscsid is not running (nothing listens on {})",
                procfs::ISCSID_SOCKET
            ),
            fix,
        ),
        Err(e) => Finding::warn(NAME, format!("cannot tell whether iscsid runs: {e}"), fix),
    }
}

/// The initiator name file holds a valid iSCSI name (targets' ACLs are keyed on it).
fn initiator_name(view: &View, file: &Path) -> Finding {
    const NAME: &str = "initiator-name";
    let path = view.path(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return unreadable_initiator_name(view, file, &path, &e),
    };
    match procfs::initiator_name(&text) {
        InitiatorName::Named(name) => match name.parse::<Iqn>() {
            Ok(_) => Finding::ok(NAME, name),
            Err(e) => Finding::fail(
                NAME,
                format!("`{name}` in {} is not a valid iSCSI name: {}", file.display(), e.reason),
                format!(
                    "write a valid one: echo InitiatorName=$(iscsi-iname) > {}; systemctl restart iscsid",
                    file.display()
                ),
            ),
        },
        InitiatorName::ToGenerate => Finding::fail(
            NAME,
            format!("{} asks for a generated name that was never generated", file.display()),
            "start iscsid once (it generates the name) or write InitiatorName=$(iscsi-iname)",
        ),
        InitiatorName::Missing => Finding::fail(
            NAME,
            format!("{} has no InitiatorName= line", file.display()),
            format!(
                "echo InitiatorName=$(iscsi-iname) > {}; systemctl restart iscsid",
                file.display()
            ),
        ),
    }
}

/// The finding for an initiator name file that cannot be read. In host mode it is read
/// through PID 1's root, so the message says so: "not found" there can also mean PID 1 is not
/// the host's (a pod without hostPID), and "permission denied" that the doctor is not root or
/// may not look into PID 1.
fn unreadable_initiator_name(view: &View, file: &Path, path: &Path, e: &std::io::Error) -> Finding {
    use std::io::ErrorKind;
    const NAME: &str = "initiator-name";
    let write = format!(
        "echo InitiatorName=$(iscsi-iname) > {}; systemctl restart iscsid",
        file.display()
    );
    let other = format!("{} must be a readable text file", file.display());
    if view.root == Path::new("/") {
        let fix = match e.kind() {
            ErrorKind::NotFound => format!("install open-iscsi, or write one: {write}"),
            ErrorKind::PermissionDenied => "run doctor as root".to_string(),
            _ => other,
        };
        return Finding::fail(NAME, format!("cannot read {}: {e}", file.display()), fix);
    }
    let detail = format!(
        "cannot read the host's {} (host mode reads it through PID 1's root, as {}): {e}",
        file.display(),
        path.display()
    );
    let fix = match e.kind() {
        ErrorKind::NotFound => format!(
            "on the host: install open-iscsi, or write one: {write}. If the host has the file, \
             PID 1 is not the host's init: run doctor on the host, or in a pod with hostPID: true"
        ),
        ErrorKind::PermissionDenied => format!(
            "run doctor as root with access to PID 1 (reading {} needs root and \
             CAP_SYS_PTRACE; in a pod: privileged, hostPID: true), or use --iscsiadm-mode direct",
            view.root.display()
        ),
        _ => other,
    };
    Finding::fail(NAME, detail, fix)
}

/// The iscsi_tcp transport is loaded, or the kernel has it (iscsid loads it at login).
async fn iscsi_tcp(host: &Host) -> Finding {
    const NAME: &str = "iscsi_tcp";
    if host.module_loaded(NAME) {
        return Finding::ok(NAME, "loaded");
    }
    match host.module_loadable(NAME).await {
        Some(true) => Finding::ok(NAME, "loadable (iscsid loads it at the first login)"),
        Some(false) => Finding::fail(
            NAME,
            "not loaded and not available for the running kernel",
            distro::host_module_fix(host, NAME),
        ),
        None => Finding::warn(
            NAME,
            "not loaded, and modprobe could not run to tell whether it is available",
            "modprobe iscsi_tcp",
        ),
    }
}

/// kubelet's directory exists (not blocking: kubelet may use another root).
fn kubelet_dir(view: &View, dir: &Path) -> Finding {
    const NAME: &str = "kubelet-dir";
    if view.path(dir).is_dir() {
        Finding::ok(NAME, format!("{} present", dir.display()))
    } else {
        Finding::warn(
            NAME,
            format!("{} not found", dir.display()),
            "pass --kubelet-dir if kubelet runs with another --root-dir (and set it in the chart)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{blocking, Status};
    use crate::exec::fake::FakeRunner;
    use crate::exec::Output;
    use std::sync::Arc;

    const UNIX_WITH_ISCSID: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000045e726f8: 00000002 00000000 00010000 0001 01 11040 @ISCSIADM_ABSTRACT_NAMESPACE
";
    const UNIX_WITHOUT: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000039f5bca1: 00000002 00000000 00010000 0005 01 10977 /run/udev/control
";

    /// A fake host: procfs and sysfs under a temp dir, the initiator name file and the
    /// kubelet dir in it too.
    struct Fixture {
        dir: tempfile::TempDir,
        runner: Arc<FakeRunner>,
    }

    impl Fixture {
        fn new(respond: impl Fn(&[String]) -> Output + Send + Sync + 'static) -> Self {
            let dir = tempfile::tempdir().unwrap();
            for d in ["proc/net", "sys/module", "kubelet"] {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            Fixture {
                dir,
                runner: Arc::new(FakeRunner::new(respond)),
            }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.path(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn host(&self) -> Host {
            Host {
                runner: self.runner.clone(),
                proc_root: self.path("proc"),
                sys_root: self.path("sys"),
            }
        }

        fn args(&self, mode: IscsiadmMode) -> DoctorComputeArgs {
            let (file, kubelet) = match mode {
                IscsiadmMode::Direct => (self.path("initiatorname.iscsi"), self.path("kubelet")),
                IscsiadmMode::Host => (
                    PathBuf::from("/etc/iscsi/initiatorname.iscsi"),
                    PathBuf::from("/var/lib/kubelet"),
                ),
            };
            DoctorComputeArgs {
                initiator_name_file: file,
                kubelet_dir: kubelet,
                iscsiadm_mode: mode,
            }
        }

        async fn run(&self, mode: IscsiadmMode) -> Vec<Finding> {
            check(&self.host(), &self.args(mode)).await
        }
    }

    fn find<'a>(f: &'a [Finding], name: &str) -> &'a Finding {
        f.iter().find(|x| x.name == name).expect(name)
    }

    fn no_sessions(argv: &[String]) -> Output {
        match argv[0].as_str() {
            "iscsiadm" => Output::failed(21, "iscsiadm: No active sessions.\n"),
            _ => Output::failed(1, "unexpected"),
        }
    }

    #[tokio::test]
    async fn a_good_host_passes() {
        let fx = Fixture::new(no_sessions);
        fx.write("proc/net/unix", UNIX_WITH_ISCSID);
        fx.write(
            "initiatorname.iscsi",
            "## DO NOT EDIT\nInitiatorName=iqn.1993-08.org.debian:01:5c8d368c2ff3\n",
        );
        std::fs::create_dir_all(fx.path("sys/module/iscsi_tcp")).unwrap();
        let f = fx.run(IscsiadmMode::Direct).await;
        assert!(f.iter().all(|x| x.status == Status::Ok), "{f:#?}");
        assert_eq!(
            find(&f, "initiator-name").detail,
            "iqn.1993-08.org.debian:01:5c8d368c2ff3"
        );
        assert_eq!(fx.runner.calls(), ["iscsiadm -m session"]);
    }

    #[tokio::test]
    async fn a_stopped_iscsid_is_named_even_though_iscsiadm_answers() {
        let fx = Fixture::new(|argv| match argv[0].as_str() {
            "iscsiadm" => Output::failed(21, "iscsiadm: No active sessions.\n"),
            _ => Output::ok(""),
        });
        fx.write("proc/net/unix", UNIX_WITHOUT);
        fx.write(
            "initiatorname.iscsi",
            "InitiatorName=iqn.2000-01.com.example:n1\n",
        );
        let f = fx.run(IscsiadmMode::Direct).await;
        assert!(blocking(&f));
        let d = find(&f, "iscsid");
        assert_eq!(d.status, Status::Fail);
        assert!(d.detail.contains("iscsid is not running"), "{d:?}");
        assert_eq!(d.fix.as_deref(), Some("systemctl enable --now iscsid"));
        assert_eq!(find(&f, "iscsiadm").status, Status::Ok);
        let tcp = find(&f, "iscsi_tcp");
        assert_eq!(
            (tcp.status, tcp.detail.as_str()),
            (Status::Ok, "loadable (iscsid loads it at the first login)")
        );
        assert!(fx
            .runner
            .calls()
            .contains(&"modprobe -n iscsi_tcp".to_string()));
    }

    #[tokio::test]
    async fn bad_names_missing_module_and_kubelet_dir_are_reported() {
        let fx = Fixture::new(|argv| {
            match argv[0].as_str() {
            "iscsiadm" => Output::ok("tcp: [1] 10.0.0.1:3260,1 iqn.2026-11.x:vg.a (non-flash)\ntcp: [2] 10.0.0.1:3260,1 iqn.2026-11.x:vg.b (non-flash)\n"),
            "modprobe" => Output::failed(1, "modprobe: FATAL: Module iscsi_tcp not found"),
            _ => Output::ok(""),
        }
        });
        fx.write("proc/net/unix", UNIX_WITH_ISCSID);
        fx.write(
            "initiatorname.iscsi",
            "InitiatorName=iqn.2000-01.com.Example:n1\n",
        );
        std::fs::remove_dir(fx.path("kubelet")).unwrap();
        let f = fx.run(IscsiadmMode::Direct).await;
        assert_eq!(find(&f, "iscsiadm").detail, "2 session(s) open");
        let name = find(&f, "initiator-name");
        assert_eq!(name.status, Status::Fail);
        assert!(name.detail.contains("not a valid iSCSI name"), "{name:?}");
        assert_eq!(find(&f, "iscsi_tcp").status, Status::Fail);
        assert_eq!(find(&f, "kubelet-dir").status, Status::Warn);

        fx.write("initiatorname.iscsi", "GenerateName=yes\n");
        let f = fx.run(IscsiadmMode::Direct).await;
        assert!(find(&f, "initiator-name")
            .detail
            .contains("never generated"));
        std::fs::remove_file(fx.path("initiatorname.iscsi")).unwrap();
        let f = fx.run(IscsiadmMode::Direct).await;
        assert!(find(&f, "initiator-name")
            .fix
            .as_deref()
            .unwrap()
            .contains("iscsi-iname"));
    }

    #[tokio::test]
    async fn host_mode_reads_the_hosts_files_through_pid_1() {
        let fx = Fixture::new(no_sessions);
        fx.write("proc/1/net/unix", UNIX_WITH_ISCSID);
        fx.write("proc/net/unix", UNIX_WITHOUT);
        fx.write(
            "proc/1/root/etc/iscsi/initiatorname.iscsi",
            "InitiatorName=iqn.2000-01.com.example:host\n",
        );
        std::fs::create_dir_all(fx.path("proc/1/root/var/lib/kubelet")).unwrap();
        std::fs::create_dir_all(fx.path("sys/module/iscsi_tcp")).unwrap();
        let f = fx.run(IscsiadmMode::Host).await;
        assert!(f.iter().all(|x| x.status == Status::Ok), "{f:#?}");
        assert_eq!(
            find(&f, "initiator-name").detail,
            "iqn.2000-01.com.example:host"
        );
    }

    #[tokio::test]
    async fn host_mode_says_it_reads_through_pid_1_and_names_the_distributions_module_package() {
        let fx = Fixture::new(|argv| match argv[0].as_str() {
            "modprobe" => Output::failed(1, "modprobe: FATAL: Module iscsi_tcp not found"),
            _ => Output::failed(21, "iscsiadm: No active sessions.\n"),
        });
        fx.write("proc/1/net/unix", UNIX_WITH_ISCSID);
        fx.write(
            "proc/1/root/etc/os-release",
            "NAME=\"Debian GNU/Linux\"\nID=debian\n",
        );
        fx.write("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        let f = fx.run(IscsiadmMode::Host).await;
        let name = find(&f, "initiator-name");
        assert_eq!(name.status, Status::Fail);
        let via = fx.path("proc/1/root/etc/iscsi/initiatorname.iscsi");
        assert!(
            name.detail.starts_with(&format!(
                "cannot read the host's /etc/iscsi/initiatorname.iscsi (host mode reads it \
                 through PID 1's root, as {}): ",
                via.display()
            )),
            "{name:?}"
        );
        let fix = name.fix.as_deref().unwrap();
        assert!(
            fix.contains("iscsi-iname") && fix.contains("hostPID: true"),
            "{fix}"
        );
        let tcp = find(&f, "iscsi_tcp");
        assert_eq!(
            tcp.fix.as_deref(),
            Some(
                "Debian's kernel package ships iscsi_tcp: apt-get install \
                 linux-image-6.1.0-18-amd64 (or boot a kernel whose package is installed), \
                 then modprobe iscsi_tcp"
            )
        );

        std::fs::create_dir_all(via).unwrap();
        let f = fx.run(IscsiadmMode::Host).await;
        assert_eq!(
            find(&f, "initiator-name").fix.as_deref(),
            Some("/etc/iscsi/initiatorname.iscsi must be a readable text file")
        );
    }

    #[tokio::test]
    async fn host_mode_names_a_failing_nsenter() {
        let fx = Fixture::new(|_| {
            Output::failed(
                127,
                "nsenter: failed to execute iscsiadm: No such file or directory\n",
            )
        });
        let f = fx.run(IscsiadmMode::Host).await;
        let a = find(&f, "iscsiadm");
        assert_eq!(a.status, Status::Fail);
        assert!(a.detail.contains("host's namespaces"), "{a:?}");
        assert!(a.fix.as_deref().unwrap().contains("hostPID"));
    }
}
