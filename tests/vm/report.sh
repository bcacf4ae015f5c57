#!/bin/sh
# Runs inside the VM after kiln-firstboot: prints facts as `KILNVM key=value`.
say() { echo "KILNVM $1=$2"; }
r=$(systemctl show -p Result --value kiln-firstboot.service)
a=$(systemctl show -p ActiveState --value kiln-firstboot.service)
if [ "$a" = active ] && [ "$r" = success ]; then say firstboot success; else say firstboot failed; fi
if [ -d /sys/module/br_netfilter ]; then say br_netfilter yes; else say br_netfilter no; fi
say bridge_nf "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)"
flex=/opt/libexec/kubernetes/kubelet-plugins/volume/exec
if [ -d "$flex" ] && touch "$flex/.w" 2>/dev/null; then say flex_writable yes; rm -f "$flex/.w"; else say flex_writable no; fi
if touch /usr/.kiln-w 2>/dev/null; then say usr_writable yes; else say usr_writable no; fi
say kubelet_exec "$(systemctl show -p ExecStart --value kubelet.service | sed -n 's/.*path=\([^ ;]*\).*/\1/p' | head -n1)"
n=0; [ -f /var/lib/kiln-vm/kubeadm.argv ] && n=$(grep -vc '^reset' /var/lib/kiln-vm/kubeadm.argv)
say kubeadm_calls "$n"
c=/var/lib/kiln-vm/config-0.json
if [ -f "$c" ]; then
  kind=$(grep -m1 '"kind"' "$c" | sed 's/.*: "\(.*\)".*/\1/')
  name=$(grep -m1 '"name": "vm-' "$c" | sed 's/.*: "\(.*\)".*/\1/')
  ip=$(grep -m1 -A1 '"node-ip"' "$c" | grep '"value"' | sed 's/.*: "\(.*\)".*/\1/')
  say config "$kind $name $ip"
  tok=no; grep -q '"token": "[a-z0-9]\{6\}\.[a-z0-9]\{16\}"' "$c" && tok=token
  hash=no; grep -q '"sha256:' "$c" && hash=hash
  say join "$kind $tok $hash"
fi
if [ -f /etc/kubernetes/pki/ca.key ]; then say ca_key_mode "$(stat -c %a /etc/kubernetes/pki/ca.key)"; else say ca_key_mode none; fi
if [ -f /var/lib/kiln/state.json ] && [ -f /run/cluster-api/bootstrap-success.complete ]; then say state yes; else say state no; fi
if [ -f /run/kiln/bootstrap-failed ]; then say failed_marker yes; else say failed_marker no; fi
if journalctl -b -u kiln-firstboot.service --no-pager | grep -q 'diagnosis \[cgroup-driver-mismatch\]'; then say diagnosis yes; else say diagnosis no; fi
if [ -x /usr/bin/kubelet ] && systemd-sysext status 2>/dev/null | grep -q kubernetes; then say sysext_kubelet yes; else say sysext_kubelet no; fi
