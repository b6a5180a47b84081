#!/usr/bin/env bash
# pki.sh — the lab cluster's certificates and kubeconfigs, made with openssl (ECDSA P-256,
# valid two days: a lab cluster lives for one run).
#
#   e2e/k8s/pki.sh RUN_DIR APISERVER_IP NODE_NAME=NODE_IP...
#
# Writes into RUN_DIR/pki: the CA, the apiserver's serving certificate (the service IP
# 10.96.0.1 and the usual kubernetes.default names included), its client certificate
# towards the kubelets, the service-account key pair, and one client certificate per
# identity: admin (system:masters), the controller-manager, the scheduler, kube-proxy,
# and every node (system:node:<name> in system:nodes, which the Node authorizer and
# NodeRestriction expect), plus each kubelet's serving certificate for its IP.
# Kubeconfigs land in RUN_DIR/kubeconfig/<identity>.conf; they name the files by absolute
# path, so a lab guest that sees RUN_DIR at the same path can use them.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 RUN_DIR APISERVER_IP [NODE_NAME=NODE_IP]..." >&2; exit 2; }
RUN=$(realpath "$1")
API_IP=$2
shift 2
PKI=$RUN/pki KC=$RUN/kubeconfig
mkdir -p "$PKI" "$KC"
DAYS=2

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# cert NAME SUBJECT EXT_USAGE [SAN]: NAME.key and NAME.crt signed by the CA.
cert() {
  local name=$1 subj=$2 usage=$3 san=${4:-} ext
  key "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  ext="keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage
basicConstraints=critical,CA:FALSE"
  [ -z "$san" ] || ext+="
subjectAltName=$san"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days "$DAYS" -out "$PKI/$name.crt" -extfile <(printf '%s\n' "$ext") 2>/dev/null
  rm -f "$PKI/$name.csr"
}

# kubeconfig IDENTITY: a kubeconfig for the client certificate IDENTITY.crt.
kubeconfig() {
  cat >"$KC/$1.conf" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://$API_IP:6443
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $PKI/$1.crt
    client-key: $PKI/$1.key
contexts:
- name: lab
  context: {cluster: lab, user: $1}
current-context: lab
EOF
}

key "$PKI/ca.key"
openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=lvm-iscsi-csi-lab-ca" -days "$DAYS" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$PKI/ca.crt" 2>/dev/null

cert apiserver "/CN=kube-apiserver" serverAuth \
  "IP:$API_IP,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client/O=system:masters" clientAuth
key "$PKI/sa.key"
openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null

cert admin "/CN=lab-admin/O=system:masters" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
for id in admin controller-manager scheduler kube-proxy; do kubeconfig "$id"; done

for n in "$@"; do
  name=${n%%=*} ip=${n#*=}
  cert "node-$name" "/CN=system:node:$name/O=system:nodes" clientAuth
  kubeconfig "node-$name"
  cert "kubelet-$name" "/CN=$name" serverAuth "IP:$ip,DNS:$name"
done
chmod 600 "$PKI"/*.key
