module lvm-iscsi-csi/e2e/k8s/standin

go 1.24
