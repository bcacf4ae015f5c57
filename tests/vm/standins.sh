#!/usr/bin/env bash
# Writes a mirror of stand-in artifacts for a profile: executable shell
# scripts at the upstream paths, so the image kiln builds really boots.
#   standins.sh PROFILE MIRROR_DIR
set -euo pipefail
profile=$1 mirror=$2
k8s=$(sed -n 's/^kubernetes_version = "\(.*\)"/\1/p' "$profile")
crictl=$(awk '/^\[artifacts.crictl\]/{f=1} f&&/^version/{gsub(/"/,"",$3); print $3; exit}' "$profile")
cni=$(awk '/^\[artifacts.cni-plugins\]/{f=1} f&&/^version/{gsub(/"/,"",$3); print $3; exit}' "$profile")
arch=amd64
bin="$mirror/release/$k8s/bin/linux/$arch"
mkdir -p "$bin"
# kubeadm: records its argv and the config it was given; fails on demand.
cat > "$bin/kubeadm" <<'SH'
#!/bin/sh
rec=/var/lib/kiln-vm; mkdir -p "$rec"
echo "$*" >> "$rec/kubeadm.argv"
while [ $# -gt 0 ]; do
  if [ "$1" = --config ]; then n=$(ls "$rec" | grep -c '^config-'); cp "$2" "$rec/config-$n.json"; fi
  shift
done
case "$(tail -n1 "$rec/kubeadm.argv")" in reset*) exit 0 ;; esac
if [ -f /etc/kiln-vm/fail ]; then cat /etc/kiln-vm/fail >&2; exit 1; fi
echo "[init] stand-in kubeadm: done"
exit 0
SH
printf '#!/bin/sh\nexec sleep infinity\n' > "$bin/kubelet"
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
