#!/usr/bin/env bash
# Writes a mirror of artifacts for a profile at the upstream paths, so the
# image kiln builds really boots: the kubeadm model and kubelet stand-in from
# tests/model/ (python3), and shell stand-ins for kubectl, crictl and CNI.
#   standins.sh PROFILE MIRROR_DIR
set -euo pipefail
profile=$1 mirror=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)
k8s=$(sed -n 's/^kubernetes_version = "\(.*\)"/\1/p' "$profile")
crictl=$(awk '/^\[artifacts.crictl\]/{f=1} f&&/^version/{gsub(/"/,"",$3); print $3; exit}' "$profile")
cni=$(awk '/^\[artifacts.cni-plugins\]/{f=1} f&&/^version/{gsub(/"/,"",$3); print $3; exit}' "$profile")
arch=amd64
bin="$mirror/release/$k8s/bin/linux/$arch"
mkdir -p "$bin"
# kubeadm and kubelet: the model (tests/model/), published where the real
# binaries are, so kiln pins, verifies and bakes them like the real ones.
install -m 0755 "$repo/tests/model/kubeadm" "$bin/kubeadm"
install -m 0755 "$repo/tests/model/kubelet" "$bin/kubelet"
printf '#!/bin/sh\necho "stand-in kubectl $*"\n' > "$bin/kubectl"
chmod 0755 "$bin"/*
for f in kubeadm kubelet kubectl; do sha256sum "$bin/$f" | cut -d' ' -f1 > "$bin/$f.sha256"; done
t=$(mktemp -d)
printf '#!/bin/sh\necho stand-in crictl\n' > "$t/crictl"; chmod 0755 "$t/crictl"
d="$mirror/kubernetes-sigs/cri-tools/releases/download/$crictl"; mkdir -p "$d"
tar -czf "$d/crictl-$crictl-linux-$arch.tar.gz" -C "$t" crictl
sha256sum "$d/crictl-$crictl-linux-$arch.tar.gz" | cut -d' ' -f1 > "$d/crictl-$crictl-linux-$arch.tar.gz.sha256"
rm "$t/crictl"
for p in bridge host-local loopback portmap; do printf '#!/bin/sh\nexit 0\n' > "$t/$p"; chmod 0755 "$t/$p"; done
d="$mirror/containernetworking/plugins/releases/download/$cni"; mkdir -p "$d"
tar -czf "$d/cni-plugins-linux-$arch-$cni.tgz" -C "$t" .
(cd "$d" && sha256sum "cni-plugins-linux-$arch-$cni.tgz" > "cni-plugins-linux-$arch-$cni.tgz.sha256")
rm -rf "$t"
