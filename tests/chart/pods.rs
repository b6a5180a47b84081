//! The chart's pods seen the way kubelet and our binary see them: `$(VAR)` expansion, the
//! argv our CLI parser gets (environment variables included), and where a path inside a
//! container really lives (which volume, which host path).

use std::path::{Component, Path};

use clap::{CommandFactory, Parser};
use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use lvm_iscsi_csi::cli::Cli;

/// Stand-ins for downward-API values (the test has no pod).
pub const PLACEHOLDER_NODE_NAME: &str = "node-a";
/// Stand-in for `status.hostIP`.
pub const PLACEHOLDER_HOST_IP: &str = "192.0.2.10";

/// What a container is, by its image's name (registry mirrors keep the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Our binary.
    Plugin,
    /// external-provisioner.
    Provisioner,
    /// external-attacher.
    Attacher,
    /// external-resizer.
    Resizer,
    /// csi-snapshotter.
    Snapshotter,
    /// livenessprobe.
    LivenessProbe,
    /// node-driver-registrar.
    Registrar,
}

/// The role of `c`, from the last path segment of its image without tag or digest.
pub fn role_of(c: &Container) -> Result<Role, String> {
    let image = c.image.as_deref().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    let name = last.split(['@', ':']).next().unwrap_or_default();
    Ok(match name {
        "lvm-iscsi-csi" => Role::Plugin,
        "csi-provisioner" => Role::Provisioner,
        "csi-attacher" => Role::Attacher,
        "csi-resizer" => Role::Resizer,
        "csi-snapshotter" => Role::Snapshotter,
        "livenessprobe" => Role::LivenessProbe,
        "csi-node-driver-registrar" => Role::Registrar,
        _ => return Err(format!("container `{}`: unknown image `{image}`", c.name)),
    })
}

/// The container's environment as kubelet resolves it (downward API -> placeholders).
pub fn env_of(c: &Container) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), None) => expand(v, &out)?,
            (None, Some(from)) => {
                let field = from.field_ref.as_ref().map(|f| f.field_path.as_str());
                match field {
                    Some("spec.nodeName") => PLACEHOLDER_NODE_NAME.to_string(),
                    // Both pods use the host network: the pod IP is the host's.
                    Some("status.hostIP" | "status.podIP") => PLACEHOLDER_HOST_IP.to_string(),
                    _ => return Err(format!("env {}: unexpected source {from:?}", e.name)),
                }
            }
            _ => return Err(format!("env {}: neither a value nor a source", e.name)),
        };
        out.push((e.name.clone(), value));
    }
    Ok(out)
}

/// Kubernetes' `$(VAR)` expansion; a reference to an undefined variable is a chart bug
/// (kubelet would pass it on literally).
pub fn expand(s: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find(')')
            .ok_or_else(|| format!("unterminated $( in `{s}`"))?;
        let name = &after[..end];
        let value = env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("`{s}` refers to undefined variable {name}"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The container's args with `$(VAR)` expanded.
pub fn args_of(c: &Container) -> Result<Vec<String>, String> {
    let env = env_of(c)?;
    c.args.iter().flatten().map(|a| expand(a, &env)).collect()
}

/// Every value given to `--name` (as `--name=v` or `--name v`).
pub fn flag_values(args: &[String], name: &str) -> Vec<String> {
    let long = format!("--{name}");
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(&long).and_then(|r| r.strip_prefix('=')) {
            out.push(v.to_string());
        } else if *a == long {
            out.extend(it.next().cloned());
        }
    }
    out
}

/// The one value of `--name`, or an error naming the container.
pub fn single_flag(c: &Container, name: &str) -> Result<String, String> {
    let values = flag_values(&args_of(c)?, name);
    match values.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "container `{}`: expected one --{name}, found {values:?}",
            c.name
        )),
    }
}

/// Parses our container's command line exactly as the binary would, with every `CSI_*`
/// environment variable turned into its flag (so an env var the CLI does not declare, or
/// one that repeats a flag, fails too).
pub fn plugin_cli(c: &Container) -> Result<Cli, String> {
    if c.command.is_some() {
        return Err(format!(
            "container `{}`: set args only; the image's ENTRYPOINT is the binary",
            c.name
        ));
    }
    let args = args_of(c)?;
    parse_with_env(c, args, true)
}

/// Parses `lvm-iscsi-csi <words>` as if run with `kubectl exec` in container `c` (e.g.
/// `doctor storage`): the command sees the container's environment, and only the
/// variables it declares matter to it.
pub fn exec_cli(c: &Container, words: &[&str]) -> Result<Cli, String> {
    parse_with_env(c, words.iter().map(|w| w.to_string()).collect(), false)
}

fn parse_with_env(c: &Container, args: Vec<String>, strict: bool) -> Result<Cli, String> {
    let mut argv = vec!["lvm-iscsi-csi".to_string()];
    argv.extend(args);
    let root = Cli::command();
    // The deepest subcommand named by the leading words is the one reading the env.
    let mut sub = &root;
    for word in argv.iter().skip(1).take_while(|w| !w.starts_with('-')) {
        sub = sub
            .find_subcommand(word)
            .ok_or_else(|| format!("container `{}`: unknown command `{word}`", c.name))?;
    }
    for (name, value) in env_of(c)? {
        if !name.starts_with("CSI_") {
            continue;
        }
        let arg = sub
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()));
        let long = match arg {
            Some(a) => a.get_long().ok_or_else(|| format!("{name} has no flag"))?,
            None if strict => {
                return Err(format!(
                    "container `{}`: `{}` reads no env {name}",
                    c.name,
                    sub.get_name()
                ))
            }
            None => continue,
        };
        argv.push(format!("--{long}={value}"));
    }
    Cli::try_parse_from(&argv).map_err(|e| format!("container `{}`: {argv:?}: {e}", c.name))
}

/// Where `path` (inside container `c`) lives: the volume and the path inside it. The
/// deepest mount wins, as in the kernel.
pub fn locate(c: &Container, path: &str) -> Result<(String, String), String> {
    let path = Path::new(path);
    if !path.is_absolute() || path.components().any(|p| p == Component::ParentDir) {
        return Err(format!("`{}` is not a plain absolute path", path.display()));
    }
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| Path::new(&m.mount_path).components().count())
        .ok_or_else(|| {
            format!(
                "container `{}`: `{}` is on no volume (the container's own filesystem)",
                c.name,
                path.display()
            )
        })?;
    let inner = path
        .strip_prefix(&mount.mount_path)
        .map_err(|e| e.to_string())?;
    let inner = match &mount.sub_path {
        Some(sub) => Path::new(sub).join(inner),
        None => inner.to_path_buf(),
    };
    Ok((mount.name.clone(), inner.to_string_lossy().into_owned()))
}

/// The pod volume named `name`.
pub fn volume<'a>(spec: &'a PodSpec, name: &str) -> Result<&'a Volume, String> {
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .ok_or_else(|| format!("no volume `{name}` in the pod"))
}

/// The host path behind `path` in container `c` (which must be on a hostPath volume).
pub fn host_path(spec: &PodSpec, c: &Container, path: &str) -> Result<String, String> {
    let (name, inner) = locate(c, path)?;
    let host = volume(spec, &name)?
        .host_path
        .as_ref()
        .ok_or_else(|| format!("`{path}` in `{}` is on `{name}`, not a hostPath", c.name))?;
    let joined = Path::new(&host.path).join(inner);
    Ok(joined.to_string_lossy().trim_end_matches('/').to_string())
}

/// The containers of a pod by role.
pub fn containers(spec: &PodSpec) -> Result<Vec<(Role, &Container)>, String> {
    spec.containers
        .iter()
        .map(|c| role_of(c).map(|r| (r, c)))
        .collect()
}

/// The only container with `role`.
pub fn the<'a>(all: &[(Role, &'a Container)], role: Role) -> Result<&'a Container, String> {
    let found: Vec<_> = all.iter().filter(|(r, _)| *r == role).collect();
    match found.as_slice() {
        [(_, c)] => Ok(c),
        _ => Err(format!(
            "expected one {role:?} container, found {}",
            found.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubelet() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("--a=$(A):1", &env).unwrap(), "--a=x:1");
        assert!(expand("--a=$(B)", &env).is_err());
        assert_eq!(
            flag_values(&["--x=1".into(), "--x".into(), "2".into()], "x"),
            ["1", "2"]
        );
    }
}
