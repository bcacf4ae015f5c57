# Shared by tests/vm/run (amd64) and tests/vm/run-arm64: checks, report facts,
# the report/watchdog units and the summary. Sourced; the caller sets
#   tag      message prefix ("vm", "vm-arm64")
#   work     the work directory (boot files: $work/BOOT.{report,console,how,time})
#   started  the harness's start time (date +%s)
#   cache    where root filesystems are cached (build_rootfs)
# and gets the counters passed, failed, the list bad_boots and `summarised`.
# shellcheck shell=bash
# shellcheck disable=SC2154,SC2034 # tag, work and started come from the caller, which reads summarised
passed=0 failed=0 summarised="" bad_boots=() failed_names=() got=""

check() { # check BOOT NAME COMMAND...   (BOOT: the boot whose report is checked)
  local b=$1 name=$2; shift 2
  got=""
  if "$@"; then
    echo "$tag: PASS $name"; passed=$((passed+1))
  else
    # What the report said instead, when the check compared one fact.
    [ -z "$got" ] || name="$name -- $got"
    echo "$tag: FAIL $name"; failed=$((failed+1)); failed_names+=("$name")
    case " ${bad_boots[*]-} " in *" $b "*) ;; *) bad_boots+=("$b") ;; esac
  fi
}

# Facts of a boot's report (`KILNVM key=value` lines, tests/vm/report.sh).
fact() { grep -a "^KILNVM $2=" "$work/$1.report" 2>/dev/null | tail -n1 | cut -d= -f2- | tr -d '\r' || true; }
# is/has leave in `got` what the fact was, for check's FAIL line.
is() { local v; v=$(fact "$1" "$2"); got="$2 was '${v:0:200}', want '${3:0:200}'"; [ "$v" = "$3" ]; }
has() { local v; v=$(fact "$1" "$2"); got="$2 was '${v:0:200}', want it to hold '$3'"
  case " $v " in *" $3 "*) return 0 ;; esac; return 1; }
reported() { grep -aq '^KILNVM report=done' "$work/$1.report" 2>/dev/null; }

vm_unit() { # vm_unit ROOT NAME TARGET  (text on stdin; enabled into TARGET.wants)
  cat > "$1/etc/systemd/system/$2"
  if [ -n "${3:-}" ]; then
    mkdir -p "$1/etc/systemd/system/$3.wants"
    ln -sf "/etc/systemd/system/$2" "$1/etc/systemd/system/$3.wants/$2"
  fi
}

# The kubelet-config ConfigMap of a cluster made by `kubeadm init` without a
# KubeletConfiguration: kubeadm's defaults, from the model itself.
vm_kubelet_defaults() { # vm_kubelet_defaults REPO > FILE
  python3 - "$1/tests/model/kubeadm" <<'PY'
import importlib.machinery, importlib.util, json, sys
loader = importlib.machinery.SourceFileLoader("kubeadm_model", sys.argv[1])
spec = importlib.util.spec_from_loader("kubeadm_model", loader)
m = importlib.util.module_from_spec(spec); loader.exec_module(m)
net = {"networking": {"serviceSubnet": "10.96.0.0/12", "dnsDomain": "cluster.local"}}
print(json.dumps(m.kubelet_defaults({}, net), indent=2, sort_keys=True))
PY
}

# The report's units in ROOT: host facts as the image's own boot left them
# (after modules-load and sysctl, before kiln-firstboot, which fixes them itself,
# and kubelet); the report on PORT (nothing else writes there), then power off
# whatever happened; a watchdog that reports and powers off after WATCHDOG s,
# before the harness's timeout, whatever hangs.
vm_report_units() { # vm_report_units ROOT PORT WATCHDOG_SECONDS [REPORT_SCRIPT]
  local root=$1 port=$2 wd=$3
  install -m 0755 "${4:-$(dirname "${BASH_SOURCE[0]}")/report.sh}" "$root/usr/local/sbin/kiln-vm-report"
  vm_unit "$root" kiln-vm-early.service multi-user.target <<'UNIT'
[Unit]
Description=kiln VM test: host prerequisites as the image's boot left them
After=systemd-modules-load.service systemd-sysctl.service
Before=kiln-firstboot.service kubelet.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/kiln-vm-report early
UNIT
  # After cloud-final too (on an image with cloud-init: its runcmd installs
  # kiln and queues kiln-firstboot's start job before it exits, so this waits
  # for that job as well; a no-op ordering where there is no cloud-init).
  vm_unit "$root" kiln-vm-report.service multi-user.target <<UNIT
[Unit]
Description=kiln VM test report
After=kiln-firstboot.service multi-user.target kubelet.service containerd.service cloud-final.service
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kiln-vm-report report
StandardOutput=file:$port
StandardError=journal
UNIT
  vm_unit "$root" kiln-vm-watchdog.timer timers.target <<UNIT
[Unit]
Description=kiln VM test watchdog
DefaultDependencies=no
[Timer]
OnBootSec=${wd}s
AccuracySec=1s
UNIT
  vm_unit "$root" kiln-vm-watchdog.service "" <<UNIT
[Unit]
Description=kiln VM test watchdog: report and power off
DefaultDependencies=no
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kiln-vm-report watchdog
StandardOutput=file:$port
StandardError=journal
UNIT
}

# Boot times, what every failed boot printed, the totals; the last line is
# `N passed, M failed`; returns non-zero when anything failed.
vm_summary() {
  echo "$tag: boot wall times:$(for f in "$work"/*.time; do [ -f "$f" ] && printf ' %s=%ss' "$(basename "$f" .time)" "$(cat "$f")"; done)"
  local b
  for b in "${bad_boots[@]-}"; do
    [ -n "$b" ] || continue
    echo "---- $b: $(cat "$work/$b.how" 2>/dev/null) — console (last 40 lines)"
    tail -n 40 "$work/$b.console" 2>/dev/null | tr -d '\r' || true
    echo "---- $b: report and journal tail"
    grep -a '^KILNVM' "$work/$b.report" 2>/dev/null | tr -d '\r' | tail -n 200 || true
  done
  echo "$tag: total wall time $(( $(date +%s) - started )) s"
  # The failed checks once more, after the long console tails: the last lines
  # of a run are what a CI log shows.
  local n
  for n in "${failed_names[@]-}"; do [ -z "$n" ] || echo "$tag: FAILED: $n"; done
  summarised=1
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# Root filesystems, kernels and disks (shared by tests/vm/run and tests/vm/real).
build_rootfs() { # build_rootfs TAR INCLUDE
  local out=$1 include=$2 log=${1%.tar}.debootstrap.log tmp b
  [ ! -f "$out" ] || return 0
  # One debootstrap at a time per cache (concurrent runs wait for it), each in
  # its own scratch directory, published by an atomic rename.
  exec 9>"$cache/.lock"
  flock 9
  if [ ! -f "$out" ]; then
    echo "vm: debootstrap (first run only; cached in $out)" >&2
    b=$(date +%s)
    tmp=$(mktemp -d "$cache/rootfs.XXXXXX")
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin debootstrap --variant=minbase \
      --include="$include" bookworm "$tmp/root" http://deb.debian.org/debian >"$log" 2>&1 ||
      { cat "$tmp/root/debootstrap/debootstrap.log" >>"$log" 2>/dev/null
        echo "vm: debootstrap failed; see $log" >&2; rm -rf "$tmp"; exit 1; }
    tar -C "$tmp/root" -cf "$tmp/rootfs.tar" .
    mv "$tmp/rootfs.tar" "$out"
    rm -rf "$tmp"
    echo "vm: $(basename "$out") built in $(( $(date +%s) - b )) s" >&2
  fi
  exec 9>&-
}

kernel_of() { # kernel_of ROOTFS_TAR DIR -> "VMLINUZ INITRD" (each rootfs boots its own kernel)
  mkdir -p "$2"
  tar -C "$2" -xf "$1" --wildcards './boot/vmlinuz-*' './boot/initrd.img-*'
  echo "$(ls "$2"/boot/vmlinuz-*) $(ls "$2"/boot/initrd.img-*)"
}

# What no scenario uses stays out of the disks (half the rootfs: smaller disks
# are made faster): kernel drivers for hardware the VM does not have, docs,
# apt's downloaded packages, /boot (the kernel is passed to qemu).
prune=(--wildcards --exclude='./boot/*' --exclude='./var/cache/apt/*' --exclude='./usr/share/doc/*'
  --exclude='./usr/share/locale/*' --exclude='./usr/share/man/*' --exclude='./usr/share/info/*'
  --exclude='./usr/lib/modules/*/kernel/sound')
for d in gpu net media infiniband staging scsi usb iio mtd bluetooth isdn hwmon mfd platform power rtc \
  video watchdog pinctrl input hid target nvme ata spi i2c thunderbolt edac leds regulator gnss atm \
  comedi w1 misc parport pcmcia ptp firewire fpga hv xen soundwire phy memstick mmc nfc ntb; do
  prune+=(--exclude="./usr/lib/modules/*/kernel/drivers/$d")
done
# The cloud VM has a NIC: virtio_net and net_failover (drivers/net itself)
# stay, the drivers in drivers/net's subdirectories go.
prune_cloud=()
for p in "${prune[@]}"; do
  [ "$p" = "--exclude=./usr/lib/modules/*/kernel/drivers/net" ] || prune_cloud+=("$p")
done
prune_cloud+=(--exclude='./usr/lib/modules/*/kernel/drivers/net/*/*')

# Nothing may stall a boot: no consoles on the report port, no timers.
quiet_units() { # quiet_units ROOT [MORE_UNIT...]
  local u
  for u in serial-getty@ttyS1.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer "${@:2}"; do
    ln -sf /dev/null "$1/etc/systemd/system/$u"
  done
}

# A NoCloud seed disk: vfat labelled CIDATA holding FILEs.
seed_disk() { # seed_disk NAME FILE...
  mkfs.vfat -n CIDATA -C "$work/$1/seed.img" 2048 >/dev/null
  mcopy -i "$work/$1/seed.img" "${@:2}" ::
}

# node.toml edits for the scenarios' seeds.
node_key() { # node_key FILE 'key = value'   (into the [node] table)
  grep -q '^\[node\]$' "$1" || printf '\n[node]\n' >> "$1"
  KV=$2 awk '{print} /^\[node\]$/ && !done {print ENVIRON["KV"]; done=1}' "$1" > "$1.tmp"
  mv "$1.tmp" "$1"
}
