#!/bin/bash
# Runs inside the VM (installed by tests/vm/run as /usr/local/sbin/kiln-vm-report).
#   kiln-vm-report early     host prerequisites as the image's boot left them, saved
#                            to /run/kiln-vm/early (ordered after systemd-modules-load
#                            and systemd-sysctl, before kiln-firstboot and kubelet)
#   kiln-vm-report report    every fact as `KILNVM key=value`, then the journal tail
#                            as `KILNVM-journal| ...`, then `KILNVM report=done`
#   kiln-vm-report watchdog  `KILNVM watchdog=fired`, pending jobs, the journal tail
# stdout is a port nothing else writes to (amd64: the second serial port ttyS1;
# arm64: the virtio console hvc0).
say() { echo "KILNVM $1=$2"; }
journal_tail() {
  journalctl -b --no-pager -n 120 2>&1 | sed 's/^/KILNVM-journal| /'
}

case ${1:-report} in
early)
  mkdir -p /run/kiln-vm
  {
    if [ -d /sys/module/br_netfilter ]; then say early_br_netfilter yes; else say early_br_netfilter no; fi
    v() { cat "/proc/sys/$1" 2>/dev/null || echo -; }
    say early_sysctls "$(v net/bridge/bridge-nf-call-iptables) $(v net/bridge/bridge-nf-call-ip6tables) $(v net/ipv4/ip_forward)"
  } > /run/kiln-vm/early
  exit 0
  ;;
watchdog)
  say watchdog fired
  say uptime "$(cut -d' ' -f1 /proc/uptime)"
  systemctl list-jobs --no-pager 2>&1 | sed 's/^/KILNVM-jobs| /'
  journal_tail
  exit 0
  ;;
esac

cat /run/kiln-vm/early 2>/dev/null || say early_br_netfilter missing
r=$(systemctl show -p Result --value kiln-firstboot.service)
a=$(systemctl show -p ActiveState --value kiln-firstboot.service)
if [ "$a" = active ] && [ "$r" = success ]; then say firstboot success; else say firstboot failed; fi
say firstboot_state "$a/$r"

# kubelet: a Type=simple unit is "active" as soon as it forks; wait (bounded)
# for its healthz so a kubelet that refuses to run shows as not active.
healthz() {
  exec 3<>/dev/tcp/127.0.0.1/10248 || return 1
  printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  grep -q '^ok' <&3
  local rc=$?
  exec 3<&-
  return $rc
}
if [ "$a" = active ]; then
  for _ in $(seq 1 30); do healthz 2>/dev/null && break; sleep 1; done
fi
say kubelet_healthz "$(healthz 2>/dev/null && echo ok || echo no)"
say kubelet_active "$(systemctl is-active kubelet.service)"
say kubelet_nrestarts "$(systemctl show -p NRestarts --value kubelet.service)"
say kubelet_exec "$(systemctl show -p ExecStart --value kubelet.service | sed -n 's/.*path=\([^ ;]*\).*/\1/p' | head -n1)"

m=/var/lib/kiln-model
n=0; [ -f $m/calls ] && n=$(grep -Evc '^(reset|version)' $m/calls)
say kubeadm_calls "$n"
[ -f $m/calls ] && say kubeadm_argv "$(paste -sd'|' $m/calls)"
if [ -f $m/systemctl ]; then
  # kubelet-related calls as verb:rc, e.g. "stop:0 restart:0"
  say systemctl_seq "$(awk '$2 == "kubelet" {sub("rc=", "", $3); printf "%s%s:%s", (n++ ? " " : ""), $1, $3}' $m/systemctl)"
  say systemctl_calls "$(paste -sd'|' $m/systemctl)"
fi

# What kubeadm was given and what it wrote (JSON documents, read with python3).
python3 - <<'PY'
import json, os

def say(k, v):
    print("KILNVM %s=%s" % (k, v))

def docs(path):
    try:
        text = open(path).read()
    except OSError:
        return []
    out, cur = [], []
    for line in text.splitlines() + ["---"]:
        if line.strip() == "---":
            if "".join(cur).strip():
                out.append(json.loads("\n".join(cur)))
            cur = []
        else:
            cur.append(line)
    return out

def arg(extra, name):
    if isinstance(extra, dict):
        return extra.get(name, "")
    for a in extra or []:
        if a.get("name") == name:
            return a.get("value", "")
    return ""

ds = docs("/var/lib/kiln-model/config-0.json")
if ds:
    kinds = sorted(d.get("kind", "") for d in ds)
    say("config_kinds", " ".join(kinds))
    main = next((d for d in ds if d.get("kind") in ("InitConfiguration", "JoinConfiguration")), {})
    nr = main.get("nodeRegistration", {})
    say("config", "%s %s" % (nr.get("name", ""), arg(nr.get("kubeletExtraArgs"), "node-ip")))
    bt = (main.get("discovery") or {}).get("bootstrapToken") or {}
    tok = "token" if len(bt.get("token", "")) == 23 and bt["token"][6] == "." else "no"
    h = "hash" if any(x.startswith("sha256:") for x in bt.get("caCertHashes") or []) else "no"
    say("join", "%s %s %s" % (main.get("kind", ""), tok, h))
    say("join_cp", "yes" if main.get("controlPlane") is not None and main.get("kind") == "JoinConfiguration" else "no")
    say("patches_dir", (main.get("patches") or {}).get("directory", ""))
try:
    c = json.load(open("/var/lib/kubelet/config.yaml"))
    say("failSwapOn", "true" if c.get("failSwapOn", True) else "false")
    say("volumePluginDir", c.get("volumePluginDir", ""))
    say("maxPods", c.get("maxPods", ""))
    say("swapBehavior", (c.get("memorySwap") or {}).get("swapBehavior", ""))
    say("cgroupDriver", c.get("cgroupDriver", ""))
except (OSError, ValueError) as e:
    say("kubelet_config", "unreadable: %s" % e)
try:
    for line in open("/var/lib/kubelet/kubeadm-flags.env"):
        if line.startswith("KUBELET_KUBEADM_ARGS="):
            say("flags", line.split("=", 1)[1].strip().strip('"'))
except OSError:
    say("flags", "")
try:
    k = json.load(open("/var/lib/kiln-model/kubelet.json"))
    say("kubelet_started_with", " ".join(k.get("argv", [])))
except (OSError, ValueError):
    say("kubelet_started_with", "")
PY

say swaps "$(tail -n +2 /proc/swaps | grep -c .)"
# Which machine, which binary, which boot (the arm64 card checks these).
say arch "$(uname -m)"
say machine_id "$(cat /etc/machine-id 2>/dev/null)"
say cmdline "$(cat /proc/cmdline)"
say cgroup_controllers "$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
fb=$(systemctl show -p ExecStart --value kiln-firstboot.service | sed -n 's/.*path=\([^ ;]*\).*/\1/p' | head -n1)
if [ -f "$fb" ]; then say firstboot_binary "$(od -An -tu2 -j18 -N2 "$fb" | tr -d ' ') $(sha256sum "$fb" | cut -d' ' -f1)"; fi
say firstboot_sources "$(journalctl -b -u kiln-firstboot.service --no-pager -o cat 2>/dev/null | sed -n 's/.*; sources: //p' | tail -n1)"
if systemctl cat containerd.service >/dev/null 2>&1; then
  ce=$(systemctl show -p ExecStart --value containerd.service | sed -n 's/.*path=\([^ ;]*\).*/\1/p' | head -n1)
  say containerd "$(systemctl is-active containerd.service) $ce $(sha256sum "$ce" 2>/dev/null | cut -d' ' -f1)"
fi
flex=/opt/libexec/kubernetes/kubelet-plugins/volume/exec
if [ -d "$flex" ] && touch "$flex/.w" 2>/dev/null; then say flex_writable yes; rm -f "$flex/.w"; else say flex_writable no; fi
if touch /usr/.kiln-w 2>/dev/null; then say usr_writable yes; rm -f /usr/.kiln-w; else say usr_writable no; fi
if [ -f /etc/kubernetes/pki/ca.key ]; then say ca_key_mode "$(stat -c %a /etc/kubernetes/pki/ca.key)"; else say ca_key_mode none; fi
if [ -f /var/lib/kiln/state.json ] && [ -f /run/cluster-api/bootstrap-success.complete ]; then say state yes; else say state no; fi
if [ -f /run/kiln/bootstrap-failed ]; then say failed_marker yes; else say failed_marker no; fi
fj=$(journalctl -b -u kiln-firstboot.service --no-pager 2>/dev/null)
if grep -q 'diagnosis \[cgroup-driver-mismatch\]' <<<"$fj"; then say diagnosis yes; else say diagnosis no; fi
grep 'diagnosis \[' <<<"$fj" | head -n 5 | sed 's/^/KILNVM-diagnosis| /'
# kubeadm's own output: its generic kubelet text only, not the kubelet's reason.
kl=/var/log/kiln/kubeadm.log
if [ -f $kl ] && grep -q 'The kubelet is not running' $kl && ! grep -qi 'cgroup driver' $kl; then
  say kubeadm_generic yes
else
  say kubeadm_generic no
fi
if [ -x /usr/bin/kubelet ] && systemd-sysext status 2>/dev/null | grep -q kubernetes; then say sysext_kubelet yes; else say sysext_kubelet no; fi
# A stock cloud image (tests/vm/run's cloud scenarios): what cloud-init did,
# what kiln's install script (cloud-final's runcmd) logged, what it installed.
if command -v cloud-init >/dev/null 2>&1; then
  say cloud_init "$(cloud-init status 2>/dev/null | sed -n 's/^status: //p')"
  say cloud_final "$(systemctl show -p ActiveState --value cloud-final.service)/$(systemctl show -p Result --value cloud-final.service)"
  say cloud_datasource "$(python3 -c 'import json; print(json.load(open("/run/cloud-init/result.json"))["v1"]["datasource"])' 2>/dev/null)"
  inst=$(journalctl -b -u cloud-final.service --no-pager -o cat 2>/dev/null | grep '^kiln-install:')
  # shellcheck disable=SC2001 # a prefix on every line (^ per line), which ${inst//} cannot anchor
  sed 's/^/KILNVM-install| /' <<<"$inst"
  say install_verified "$(sed -n 's/^kiln-install: sha256 \([0-9a-f]\{64\}\) verified.*/\1/p' <<<"$inst" | tail -n1)"
  say install_refused "$(sed -n 's/^kiln-install: REFUSED \([^ ]*\): its sha256 is \([0-9a-f]*\), not the \([0-9a-f]*\) this user-data was written for; nothing was installed$/\1 \2 \3/p' <<<"$inst" | tail -n1)"
  say image_sha256 "$(cat /var/lib/kiln/image.sha256 2>/dev/null || echo absent)"
  if [ -f /opt/bin/kiln-firstboot ]; then say opt_firstboot "$(sha256sum /opt/bin/kiln-firstboot | cut -d' ' -f1)"; else say opt_firstboot absent; fi
  say opt_bin "$(shopt -s nullglob dotglob; cd /opt/bin 2>/dev/null && f=(*) && echo "${f[*]}")"
  say download_left "$(shopt -s nullglob; f=(/var/lib/kiln/.image*); echo "${#f[@]}")"
  say firstboot_unit "$(systemctl show -p LoadState --value kiln-firstboot.service)"
  say firstboot_journal "$(journalctl -b -u kiln-firstboot.service --no-pager -q -o cat 2>/dev/null | grep -c .)"
  say node_ips "$(ip -4 -o addr show scope global 2>/dev/null | awk '{print $2 "=" $4}' | paste -sd' ')"
  # The guest's only way out is the guestfwd: the host's own server port,
  # straight through the gateway (10.0.2.2), must not answer.
  if [ -f /etc/kiln-vm/host-port ]; then
    if timeout 5 bash -c "exec 3<>/dev/tcp/10.0.2.2/$(cat /etc/kiln-vm/host-port)" 2>/dev/null; then
      say host_direct reachable
    else
      say host_direct unreachable
    fi
  fi
fi
say uptime "$(cut -d' ' -f1 /proc/uptime)"
journal_tail
say report "done"
