# lvm-iscsi-csi: one image for the controller (storage node) and the node plugin.
#
#   docker build -t <registry>/lvm-iscsi-csi:<tag> .
#
# The build needs no protoc (the CSI proto is compiled by protox in build.rs).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lvm-iscsi-csi \
    && install -D -m 0755 target/release/lvm-iscsi-csi /out/lvm-iscsi-csi

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lvm-iscsi-csi" \
      org.opencontainers.image.description="Kubernetes CSI driver: LVM volumes on a storage node, exported over iSCSI" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Exactly the tools the driver runs (tests/chart.rs keeps this list and the code in
# agreement): LVM, the iSCSI initiator and tgt's admin tool, the filesystems' mkfs/grow
# tools, blkid/nsenter, modprobe (doctor). No compiler or package cache stays in the
# image. open-iscsi's generated initiator name is removed: a node must use its host's,
# never the image's.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        lvm2 \
        dmsetup \
        thin-provisioning-tools \
        open-iscsi \
        tgt \
        e2fsprogs \
        xfsprogs \
        util-linux \
        mount \
        kmod \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/iscsi/initiatorname.iscsi
COPY --from=build /out/lvm-iscsi-csi /usr/local/bin/lvm-iscsi-csi
ENTRYPOINT ["/usr/local/bin/lvm-iscsi-csi"]
