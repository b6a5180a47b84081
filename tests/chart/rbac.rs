//! A small RBAC evaluator over the rendered Roles, ClusterRoles and bindings: can this
//! service account do this?

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};

use crate::objects::Object;

/// One request to authorize.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// API group ("" for core).
    pub group: &'a str,
    /// Resource, with `/subresource` if any.
    pub resource: &'a str,
    /// Verb.
    pub verb: &'a str,
    /// Namespace of the object (None: cluster-scoped or all namespaces).
    pub namespace: Option<&'a str>,
    /// Object name (None: any, e.g. list).
    pub name: Option<&'a str>,
}

/// The rendered RBAC objects.
#[derive(Default)]
pub struct Rbac {
    cluster_roles: Vec<ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
}

impl Rbac {
    /// Collects the RBAC objects among `objects`.
    pub fn new(objects: &[Object]) -> Self {
        let mut rbac = Rbac::default();
        for o in objects {
            match o {
                Object::ClusterRole(r) => rbac.cluster_roles.push(r.clone()),
                Object::ClusterRoleBinding(b) => rbac.cluster_bindings.push(b.clone()),
                Object::Role(r) => rbac.roles.push(r.clone()),
                Object::RoleBinding(b) => rbac.bindings.push(b.clone()),
                _ => {}
            }
        }
        rbac
    }

    /// Whether service account `ns/sa` may make `req`.
    pub fn allows(&self, ns: &str, sa: &str, req: Request) -> bool {
        let is_sa = |s: &k8s_openapi::api::rbac::v1::Subject| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(ns)
        };
        let cluster_wide = self
            .cluster_bindings
            .iter()
            .filter(|b| b.subjects.iter().flatten().any(is_sa))
            .filter_map(|b| self.cluster_role(&b.role_ref.name, &b.role_ref.kind))
            .any(|rules| rules.iter().any(|r| matches(r, &req)));
        let namespaced = self
            .bindings
            .iter()
            .filter(|b| b.subjects.iter().flatten().any(is_sa))
            .filter(|b| req.namespace.is_some() && b.metadata.namespace.as_deref() == req.namespace)
            .filter_map(|b| {
                if b.role_ref.kind == "Role" {
                    self.roles
                        .iter()
                        .find(|r| {
                            r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())
                                && r.metadata.namespace == b.metadata.namespace
                        })
                        .and_then(|r| r.rules.clone())
                } else {
                    self.cluster_role(&b.role_ref.name, &b.role_ref.kind)
                }
            })
            .any(|rules| rules.iter().any(|r| matches(r, &req)));
        cluster_wide || namespaced
    }

    /// Every binding must point at a role that exists.
    pub fn dangling_refs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in &self.cluster_bindings {
            if self
                .cluster_role(&b.role_ref.name, &b.role_ref.kind)
                .is_none()
            {
                out.push(format!("ClusterRoleBinding -> {}", b.role_ref.name));
            }
        }
        for b in &self.bindings {
            let found = match b.role_ref.kind.as_str() {
                "Role" => self.roles.iter().any(|r| {
                    r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())
                        && r.metadata.namespace == b.metadata.namespace
                }),
                _ => self
                    .cluster_role(&b.role_ref.name, &b.role_ref.kind)
                    .is_some(),
            };
            if !found {
                out.push(format!("RoleBinding -> {}", b.role_ref.name));
            }
        }
        out
    }

    fn cluster_role(&self, name: &str, kind: &str) -> Option<Vec<PolicyRule>> {
        if kind != "ClusterRole" {
            return None;
        }
        self.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .map(|r| r.rules.clone().unwrap_or_default())
    }
}

fn matches(rule: &PolicyRule, req: &Request) -> bool {
    let any = |list: &Option<Vec<String>>, want: &str| {
        list.iter().flatten().any(|x| x == "*" || x == want)
    };
    let name_ok = match (&rule.resource_names, req.name) {
        (None, _) => true,
        (Some(names), _) if names.is_empty() => true,
        (Some(names), Some(n)) => names.iter().any(|x| x == n),
        (Some(_), None) => false,
    };
    any(&rule.api_groups, req.group)
        && any(&rule.resources, req.resource)
        && rule.verbs.iter().any(|v| v == "*" || v == req.verb)
        && name_ok
}
