#!/usr/bin/env bash
# Writes a mirror of artifacts for a profile at the upstream paths, so the
# image kiln builds really boots: the kubeadm model and kubelet stand-in from
# tests/model/ (python3), shell stand-ins for kubectl, crictl and CNI, and —
# when the profile pins them (card profiles) — containerd and runc.
# Scripts run on any architecture, so ARCH only picks the upstream paths.
#   standins.sh PROFILE MIRROR_DIR [ARCH]   (ARCH: amd64, the default, or arm64)
set -euo pipefail
profile=$1 mirror=$2 arch=${3:-amd64}
repo=$(cd "$(dirname "$0")/../.." && pwd)
k8s=$(sed -n 's/^kubernetes_version = "\(.*\)"/\1/p' "$profile")
# The version of [artifacts.NAME] in the profile (empty when it has none).
version_of() { awk -v t="[artifacts.$1]" '$0 == t {f=1; next} /^\[/ {f=0} f && /^version/ {gsub(/"/, "", $3); print $3; exit}' "$profile"; }
crictl=$(version_of crictl)
cni=$(version_of cni-plugins)
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
printf "Apache License 2.0 (stand-in)\n" > "$t/LICENSE"; printf "# plugins (stand-in)\n" > "$t/README.md"; chmod 0644 "$t/LICENSE" "$t/README.md"   # as the release tarball
d="$mirror/containernetworking/plugins/releases/download/$cni"; mkdir -p "$d"
tar -czf "$d/cni-plugins-linux-$arch-$cni.tgz" -C "$t" .
(cd "$d" && sha256sum "cni-plugins-linux-$arch-$cni.tgz" > "cni-plugins-linux-$arch-$cni.tgz.sha256")
rm -rf "$t"

publish() { # publish FILE: FILE.sha256 beside it (what `kiln pin` reads)
  sha256sum "$1" | cut -d' ' -f1 > "$1.sha256"
}
containerd=$(version_of containerd)
if [ -n "$containerd" ]; then
  # containerd stand-in: does the two things kiln's card depends on. It listens
  # on the CRI socket kubeadm's preflight and the kubelet look for, and, as
  # containerd does for its Type=notify unit (containerd/containerd
  # containerd.service; notifyReady in cmd/containerd/command/notify_linux.go:
  # go-systemd's SdNotify(false, SdNotifyReady)), sends READY=1 to
  # $NOTIFY_SOCKET once it serves. It runs no containers: no image pulls or
  # pods happen in the VM tests.
  t=$(mktemp -d); mkdir -p "$t/bin"
  cat > "$t/bin/containerd" <<'PY'
#!/usr/bin/python3
# containerd stand-in (tests/vm/standins.sh): the CRI socket, READY=1, then wait.
import os, socket
os.makedirs("/run/containerd", exist_ok=True)
path = "/run/containerd/containerd.sock"
if os.path.exists(path):
    os.unlink(path)
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(16)
n = os.environ.get("NOTIFY_SOCKET", "")
if n:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    c.connect("\0" + n[1:] if n.startswith("@") else n)
    c.send(b"READY=1")
print("containerd stand-in: serving %s" % path, flush=True)
while True:
    conn, _ = srv.accept()
    conn.close()
PY
  # shellcheck disable=SC2016 # $0 and $* are the stand-in script's own, expanded when it runs
  printf '#!/bin/sh\necho "stand-in $0 $*"\n' > "$t/bin/ctr"
  cp "$t/bin/ctr" "$t/bin/containerd-shim-runc-v2"
  chmod 0755 "$t/bin"/*
  d="$mirror/containerd/containerd/releases/download/v$containerd"; mkdir -p "$d"
  tar -czf "$d/containerd-static-$containerd-linux-$arch.tar.gz" -C "$t" bin
  publish "$d/containerd-static-$containerd-linux-$arch.tar.gz"
  rm -rf "$t"
fi
runc=$(version_of runc)
if [ -n "$runc" ]; then
  d="$mirror/opencontainers/runc/releases/download/$runc"; mkdir -p "$d"
  printf '#!/bin/sh\necho "stand-in runc $*"\n' > "$d/runc.$arch"
  chmod 0755 "$d/runc.$arch"
  publish "$d/runc.$arch"
fi
