#!/bin/bash
# Runs inside the real-cluster VMs (installed by tests/vm/real as
# /usr/local/sbin/kiln-vm-report; stdout is the second serial port, ttyS1).
#   kiln-vm-report early     host prerequisites before kiln-firstboot (as report.sh)
#   kiln-vm-report report    every fact as `KILNVM key=value`, then the journal
#                            tail as `KILNVM-journal| ...`, then `KILNVM report=done`
#   kiln-vm-report watchdog  `KILNVM watchdog=fired`, pending jobs, the journal tail
# The init node's report waits (bounded) for /readyz and for every node the
# scenario expects (/etc/kiln-vm/expect-nodes) to be Ready.
say() { echo "KILNVM $1=$2"; }
up() { cut -d' ' -f1 /proc/uptime; }
journal_tail() {
  journalctl -b --no-pager -n 150 2>&1 | sed 's/^/KILNVM-journal| /'
}
k() { /opt/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=20s "$@"; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS.
wait_for() {
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 3
  done
}
# Seconds since power-on at which a unit's main process started/exited.
mono() { # mono UNIT PROPERTY
  local us
  us=$(systemctl show -p "$2" --value "$1")
  [ -n "$us" ] && [ "$us" != 0 ] && echo $(( us / 1000000 )) || echo -
}

case ${1:-report} in
early)
  mkdir -p /run/kiln-vm
  # Which boot of this disk this is (1 = first boot; 2 = the reboot scenario).
  n=$(( $(cat /var/lib/kiln-vm/boots 2>/dev/null || echo 0) + 1 ))
  echo "$n" > /var/lib/kiln-vm/boots
  {
    say boot "$n"
    if [ -d /sys/module/br_netfilter ]; then say early_br_netfilter yes; else say early_br_netfilter no; fi
  } > /run/kiln-vm/early
  exit 0
  ;;
watchdog)
  say watchdog fired
  say uptime "$(up)"
  systemctl list-jobs --no-pager 2>&1 | sed 's/^/KILNVM-jobs| /'
  /opt/bin/crictl --runtime-endpoint unix:///run/containerd/containerd.sock ps -a 2>&1 | sed 's/^/KILNVM-crictl| /'
  journal_tail
  exit 0
  ;;
esac

role=$(cat /etc/kiln-vm/role)
expect=$(cat /etc/kiln-vm/expect-nodes)
boot=$(cat /var/lib/kiln-vm/boots 2>/dev/null || echo 1)
cat /run/kiln-vm/early 2>/dev/null || say early_br_netfilter missing
r=$(systemctl show -p Result --value kiln-firstboot.service)
a=$(systemctl show -p ActiveState --value kiln-firstboot.service)
if [ "$a" = active ] && [ "$r" = success ]; then say firstboot success; else say firstboot failed; fi
say firstboot_state "$a/$r"
# kiln-firstboot's journal of this boot (it has ended: the report runs after it).
fb_journal=$(journalctl -b --no-pager -u kiln-firstboot.service 2>&1)
# Its import-images step: what it imported (and how long it took); a worker
# leaves the control-plane images in the archive.
say images_imported "$(grep -oE '(imported [0-9]+ images from [^ ]+ \([0-9.]+ MiB\) in [0-9.]+ s|all [0-9]+ images are in containerd)' <<<"$fb_journal" | tail -n1)"
say images_left "$(grep -oE '[0-9]+ control-plane images left in the archive' <<<"$fb_journal" | tail -n1)"
fb_start=$(mono kiln-firstboot.service ExecMainStartTimestampMonotonic)
fb_end=$(mono kiln-firstboot.service ExecMainExitTimestampMonotonic)
if [ "$role" = init ] && [ "$a" = active ]; then
  # Once a wait the rest depend on has failed, the rest look once and go on
  # (a failed run ends in minutes, with every fact, instead of after every wait).
  gave_up=""
  wait_or_give_up() { # wait_or_give_up SECONDS COMMAND...
    local s=$1; shift
    [ -z "$gave_up" ] || s=0
    wait_for "$s" "$@" || { gave_up=$*; return 1; }
  }
  ready() { [ "$(k get --raw /readyz 2>/dev/null)" = ok ]; }
  # (A reboot's API server takes longer: its informers and etcd come back together.)
  wait_or_give_up 600 ready || true
  if ready; then say readyz ok; else say readyz "$(k get --raw '/readyz?verbose' 2>&1 | grep -v '^\[+\]' | tr '\n' ' ' | head -c 300)"; fi
  self_ready() { k get node vm-init --no-headers 2>/dev/null | awk '{print $2}' | grep -qx Ready; }
  wait_or_give_up 300 self_ready || true
  pods_running() {
    ! k get pods -n kube-system --no-headers 2>/dev/null | grep -E '^(etcd|kube-apiserver|kube-controller-manager|kube-scheduler)-' | grep -vq ' Running '
  }
  static_pods() {
    k get pods -n kube-system --no-headers -o custom-columns=N:.metadata.name,P:.status.phase 2>/dev/null |
      awk '$1 ~ /^(etcd|kube-apiserver|kube-controller-manager|kube-scheduler)-/ {printf "%s%s=%s", (n++ ? " " : ""), $1, $2}'
  }
  if [ "$boot" -eq 1 ]; then
    # The first boot: `kubeadm init` and this node's control plane; then the
    # node reboots (the harness boots the disk again) before anyone joins.
    say self_ready "$(self_ready && echo yes || echo no)"
    wait_or_give_up 300 pods_running || true
    say static_pods "$(static_pods)"
    say times "firstboot_start=$fb_start kubeadm_done=$fb_end ready=$(up | cut -d. -f1)"
  else
    # The reboot: kiln-firstboot found its state and did nothing; kubeadm did not run.
    if grep -q 'already; nothing to do' <<<"$fb_journal"; then
      say firstboot_noop yes
    else
      say firstboot_noop no
    fi
    say kubeadm_runs "$(journalctl -b --no-pager 2>/dev/null | grep -c '\[init\] Using Kubernetes version')"
    # This node Ready again: the harness powers the joiners on one at a time from
    # here (a TCG control plane has no CPU to spare for two joins at once).
    say init_ready "$(self_ready && echo yes || echo no)"
    nodes_ready() {
      local n
      n=$(k get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)
      [ "$n" -ge "$expect" ]
    }
    # Each joiner boots (about 150 s under TCG), joins and is Ready before the
    # next boots.
    wait_or_give_up $(( expect > 1 ? 1500 : 300 )) nodes_ready || true
    ready_at=$(up)
    say nodes_ready "$(k get nodes --no-headers 2>/dev/null | awk '$2 == "Ready" {print $1}' | sort | paste -sd' ')"
    k get nodes -o wide 2>&1 | sed 's/^/KILNVM-nodes| /'
    wait_or_give_up 120 pods_running || true
    say static_pods "$(static_pods)"
    # CoreDNS (kubeadm's addon, on the pod network): every replica Running.
    dns_running() {
      local p
      p=$(k -n kube-system get pods -l k8s-app=kube-dns --no-headers 2>/dev/null | awk '{print $3}' | sort -u | paste -sd' ')
      [ "$p" = Running ]
    }
    wait_or_give_up 300 dns_running || true
    say coredns "$(k -n kube-system get pods -l k8s-app=kube-dns --no-headers 2>/dev/null | awk '{print $3}' | sort | uniq -c | awk '{printf "%s%s=%s", (n++ ? " " : ""), $2, $1}')"
    # kube-proxy (kubeadm's DaemonSet, the image's iptables) on every node, and
    # the `kubernetes` Service's VIP routed on this node; then CoreDNS Ready
    # (it reaches the API through that VIP).
    proxies() { k -n kube-system get pods -l k8s-app=kube-proxy --no-headers 2>/dev/null | awk '$3 == "Running"' | wc -l; }
    proxies_running() { [ "$(proxies)" -ge "$expect" ]; }
    wait_or_give_up 300 proxies_running || true
    say kube_proxy_running "$(proxies)"
    vip() { [ "$(k --server https://10.96.0.1:443 get --raw /readyz 2>/dev/null)" = ok ]; }
    wait_or_give_up 120 vip || true
    say service_vip "$(k --server https://10.96.0.1:443 get --raw /readyz 2>&1 | head -c 200)"
    dns_ready() {
      local r
      r=$(k -n kube-system get pods -l k8s-app=kube-dns --no-headers 2>/dev/null | awk '{print $2}' | sort -u | paste -sd' ')
      [ "$r" = 1/1 ]
    }
    wait_or_give_up 300 dns_ready || true
    say coredns_ready "$(k -n kube-system get pods -l k8s-app=kube-dns --no-headers 2>/dev/null | awk '{print $2}' | paste -sd' ')"
    if [ "$expect" -gt 1 ]; then
      # etcd grew to one member per control plane (the image carries etcdctl).
      # (Retried: under TCG an exec can time out while the control plane is busy.)
      members() {
        k -n kube-system exec etcd-vm-init -- etcdctl --endpoints=https://127.0.0.1:2379 \
          --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/server.crt \
          --key=/etc/kubernetes/pki/etcd/server.key member list > /run/kiln-vm/members 2>&1
      }
      two_members() { members; [ "$(grep -c started /run/kiln-vm/members)" -ge "$expect_cp" ]; }
      expect_cp=2
      wait_or_give_up 180 two_members || true
      say etcd_members "$(grep -c started /run/kiln-vm/members)"
      sed 's/^/KILNVM-etcd| /' /run/kiln-vm/members
      # A pod on the worker (CoreDNS's image, already in containerd, run on its own
      # with no Corefile): logs and exec go API server -> the worker's kubelet.
      k apply -f - >/dev/null 2>&1 <<'POD'
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kiln-vm-test", "namespace": "default"},
 "spec": {"nodeSelector": {"kubernetes.io/hostname": "vm-worker"},
          "containers": [{"name": "c", "image": "registry.k8s.io/coredns/coredns:v1.12.1", "imagePullPolicy": "Never", "args": ["-dns.port=1053"]}]}}
POD
      running() { [ "$(k get pod kiln-vm-test -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]; }
      wait_or_give_up 300 running || true
      say test_pod "$(k get pod kiln-vm-test -o jsonpath='{.status.phase} {.spec.nodeName}' 2>&1)"
      logs_ok() { k logs kiln-vm-test 2>/dev/null | grep -q 'CoreDNS-1.12.1'; }
      wait_or_give_up 60 logs_ok || true
      # ok_or CHECK COMMAND...: "ok", or the last lines COMMAND printed.
      ok_or() { if "$1"; then echo ok; else shift; "$@" 2>&1 | tail -n 2 | tr '\n' ' '; fi; }
      say test_pod_logs "$(ok_or logs_ok k logs kiln-vm-test)"
      exec_ok() { k exec kiln-vm-test -- /coredns -version 2>/dev/null | grep -q 'CoreDNS-1.12.1'; }
      wait_or_give_up 60 exec_ok || true
      say test_pod_exec "$(ok_or exec_ok k exec kiln-vm-test -- /coredns -version)"
    fi
    say times "firstboot_start=$fb_start kubeadm_done=$fb_end nodes_ready=${ready_at%.*} coredns=$(up | cut -d. -f1)"
  fi
  [ -z "$gave_up" ] || say gave_up "$gave_up"
  k get pods -A -o wide 2>&1 | sed 's/^/KILNVM-pods| /'
elif [ "$a" = active ]; then
  # A joiner: its own node Ready, as its kubelet's credentials may read it.
  me=$(cat /etc/hostname)
  kn() { /opt/bin/kubectl --kubeconfig /etc/kubernetes/kubelet.conf --request-timeout=20s "$@"; }
  self_ready() { kn get node "$me" --no-headers 2>/dev/null | awk '{print $2}' | grep -qx Ready; }
  # (As long as the init node waits for every node: a busy TCG control plane
  # can take many minutes to report a joiner Ready.)
  wait_for 1200 self_ready
  say self_ready "$(self_ready && echo yes || echo no)"
  say times "firstboot_start=$fb_start kubeadm_done=$fb_end ready=$(up | cut -d. -f1)"
else
  say times "firstboot_start=$fb_start kubeadm_done=$fb_end"
fi
say kubelet_active "$(systemctl is-active kubelet.service)"
say kubelet_nrestarts "$(systemctl show -p NRestarts --value kubelet.service)"
# Why kubelet exited, when it did (what a restart check's failure is read from).
journalctl -b --no-pager -u kubelet.service 2>/dev/null |
  grep -E 'command failed|failed to run Kubelet|Main process exited|Scheduled restart' | tail -n 5 | sed 's/^/KILNVM-kubelet-exit| /'
say images "$(/opt/bin/ctr -n k8s.io images ls -q 2>/dev/null | grep -v '^sha256:' | sort | paste -sd' ')"
# Nothing pulled: containerd logs every CRI PullImage request.
say pulls "$(journalctl -b --no-pager -u containerd.service -u kubelet.service 2>/dev/null | grep -cE 'PullImage|ErrImagePull|ImagePullBackOff')"
tail -n 80 <<<"$fb_journal" | sed 's/^/KILNVM-firstboot| /'
journal_tail
say report "done"
# A joiner stays up (its kubelet serves the init node's logs/exec checks) until
# the harness stops it; the init node's report ends the run (poweroff).
[ "$role" = init ] || exec sleep infinity
