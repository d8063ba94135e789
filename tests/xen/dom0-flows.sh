# Sourced by dom0-test.sh after dom0-apps.sh: flow 3 (split-SSH) on real Xen. dom0 runs
# qubes-qrexecd (QubesDB + qrexec control for the three domains, VM -> VM calls routed by
# policy) over platform-dom0; the ssh-agent vault unikernel holds the key; two Linux PV AppVMs
# (domu-work-init.sh): `work` lists the key and ssh-es into its own sshd with it through
# qrexec-client-vm's forwarder, `other` is refused by policy.
D=/usr/local/lib/xen-test
QREXECD=$D/qubes-qrexecd
VMAGENT=$D/qubes-vm-agent
VAULT=sshagent-unikernel
FLOWMEM=${FLOWMEM:-192}
type now_ms > /dev/null 2>&1 || now_ms() { date +%s%3N; }
modprobe -a xen-evtchn xen-gntdev xen-gntalloc 2>/dev/null
flows_qdb() {  # flows_qdb NAME: the QubesDB entries file of a qube
  printf '/name %s\n/type AppVM\n/qubes-vm-type AppVM\n/default-user user\n' "$1" > /tmp/flows-$1.qdb
}
flows_cfg() {  # flows_cfg NAME ROLE MEM: a Linux PV AppVM's config
  cat > /tmp/flows-$1.cfg <<EOC
name = "$1"
type = "pv"
kernel = "/boot/vmlinuz-$(uname -r)"
ramdisk = "$D/linux-work.cpio.gz"
extra = "console=hvc0 quiet flows.role=$2 flows.vault=$VAULT"
memory = $3
vcpus = 1
on_crash = "preserve"
EOC
}
flows_log() { echo /var/log/xen/console/guest-$1.log; }
flows_checks() {  # flows_checks NAME: the AppVM's FLOWS-CHECK lines as checks flow3-<check>
  local role check verdict rest
  grep -a 'FLOWS-CHECK ' "$(flows_log "$1")" | sed 's/.*FLOWS-CHECK //' | tr -d '\r' |
    while read -r role check verdict rest; do
      [ "$verdict" = ok ]; check "flow3-$role-$check" $? "$rest"
    done
}

if [ ! -x "$QREXECD" ] || [ ! -s "$D/linux-work.cpio.gz" ]; then
  check flow3 1 "no $QREXECD or AppVM initramfs in the dom0 root"
else
  # The project's policy.d as shipped, plus the lab's allow rule (read first: 30 < 90).
  rm -rf /tmp/flows-policy.d; mkdir -p /tmp/flows-policy.d
  cp "$D"/policy.d/*.policy /tmp/flows-policy.d/
  cp "$D/flows.policy" /tmp/flows-policy.d/30-flows.policy
  SDISK=/var/lib/xen-test-flows-ssh.img
  rm -f "$SDISK"; truncate -s 64M "$SDISK"
  for q in $VAULT work other; do flows_qdb $q; rm -f "$(flows_log $q)"; done
  cat > /tmp/flows-$VAULT.cfg <<EOC
name = "$VAULT"
type = "$MODE"
kernel = "$D/ssh-agent-vm.vmlinuz"
memory = $FLOWMEM
vcpus = 1
extra = "kdf=argon2id:64:1:1"
disk = [ 'format=raw,vdev=xvdb,access=rw,target=$SDISK' ]
on_crash = "preserve"
EOC
  flows_cfg work work 256
  flows_cfg other other 160
  F0=$(now_ms)
  ok=0
  took=
  for q in $VAULT work other; do
    c0=$(now_ms)
    xl create -p /tmp/flows-$q.cfg > /tmp/flows-$q.create 2>&1 || ok=1
    took="$took $q $(( $(now_ms) - c0 )) ms,"
  done
  check flow3-create $ok "xl create -p of $VAULT ($MODE), work and other (Linux PV):$took $(cat /tmp/flows-*.create | grep -i error | head -1)"
  VDOM=$(xl domid $VAULT 2>/dev/null); WDOM=$(xl domid work 2>/dev/null); ODOM=$(xl domid other 2>/dev/null)
  rm -f /run/qubes-qrexecd.sock
  "$QREXECD" --backend dom0 --policy-dir /tmp/flows-policy.d --socket /run/qubes-qrexecd.sock \
    --domain "$VAULT:$VDOM:/tmp/flows-$VAULT.qdb" --domain "work:$WDOM:/tmp/flows-work.qdb" \
    --domain "other:$ODOM:/tmp/flows-other.qdb" > /tmp/flows-qrexecd.log 2>&1 &
  QPID=$!
  for q in $VAULT work other; do xl unpause $q; done
  # dom0 stores a fresh ed25519 key in the vault through its admin service (as
  # qvm-ssh-agent-admin does): OpenSSH's ssh-add on a forwarder socket whose every connection
  # is qubes.SshAgentAdmin+work, dom0's own call; the first ssh-add -X formats the key store.
  rm -f /tmp/flows-admin.sock /tmp/flows-key /tmp/flows-key.pub
  QUBES_QREXEC_AGENT_SOCK=/run/qubes-qrexecd.sock "$VMAGENT" forward --listen /tmp/flows-admin.sock \
    --target $VAULT --service qubes.SshAgentAdmin+work > /tmp/flows-admin.log 2>&1 &
  APID=$!
  printf '#!/bin/sh\necho lab-vault-passphrase\n' > /tmp/flows-askpass; chmod 755 /tmp/flows-askpass
  ssh-keygen -q -t ed25519 -N '' -C flows@lab -f /tmp/flows-key
  FP=$(ssh-keygen -l -f /tmp/flows-key | awk '{print $2}')
  export SSH_ASKPASS=/tmp/flows-askpass SSH_ASKPASS_REQUIRE=force DISPLAY=none
  ok=1
  for _ in $(seq 1 60); do
    SSH_AUTH_SOCK=/tmp/flows-admin.sock timeout 120 ssh-add -X > /tmp/flows-add.txt 2>&1 && { ok=0; break; }
    sleep 2
  done
  [ $ok = 0 ] && SSH_AUTH_SOCK=/tmp/flows-admin.sock timeout 120 ssh-add /tmp/flows-key >> /tmp/flows-add.txt 2>&1
  ok=$?
  rm -f /tmp/flows-key
  unset SSH_ASKPASS SSH_ASKPASS_REQUIRE DISPLAY
  check flow3-key-into-vault $ok "dom0: ssh-add -X, ssh-add key $FP through qubes.SshAgentAdmin+work; dom0's copy deleted: $(tail -1 /tmp/flows-add.txt)"
  # Timing: xl create of the vault -> the first answer of the vault to work's ssh-add -l.
  t=
  for _ in $(seq 1 6000); do
    grep -aq 'FLOWS: agent-answered' "$(flows_log work)" 2>/dev/null && { t=$(( $(now_ms) - F0 )); break; }
    crashed work && break
    sleep 0.05
  done
  echo "XEN-TEST $MODE timing flow3-$MODE:xl-create-to-agent-answering=${t:-?}ms"
  [ -n "$t" ]; check flow3-agent-answering $? "$(grep -ao 'FLOWS: agent-answered.*' "$(flows_log work)" | head -1)"
  wait_for 400 grep -aq 'FLOWS: done' "$(flows_log work)"
  wait_for 100 grep -aq 'FLOWS: done' "$(flows_log other)"
  flows_checks work
  flows_checks other
  # dom0's daemon: the allowed route and the policy's refusal of other's call.
  grep -q "qubes.SshAgent+work from work to $VAULT: allowed" /tmp/flows-qrexecd.log
  check flow3-policy-allow $? "$(grep -m1 "from work to $VAULT: allowed" /tmp/flows-qrexecd.log | cut -c1-200)"
  grep -q "qubes.SshAgent+work from other to $VAULT: refused: denied by policy" /tmp/flows-qrexecd.log
  check flow3-policy-deny $? "$(grep -m1 "from other to $VAULT: refused" /tmp/flows-qrexecd.log | cut -c1-200)"
  grep -q "qubes.SshAgentAdmin+work from work to $VAULT: refused: denied by policy" /tmp/flows-qrexecd.log
  check flow3-policy-admin-deny $? "$(grep -m1 "SshAgentAdmin+work from work to $VAULT: refused" /tmp/flows-qrexecd.log | cut -c1-200)"
  for q in work other; do xl destroy $q 2>/dev/null; done
  timeout 60 xl shutdown -w $VAULT > /tmp/flows-shut.txt 2>&1
  rc=$?
  [ $rc = 0 ] && grep -q 'reason code 0' /tmp/flows-shut.txt
  check flow3-vault-shutdown $? "xl shutdown -w rc=$rc: $(tail -1 /tmp/flows-shut.txt)"
  kill $QPID $APID 2>/dev/null
  sleep 0.5
  for q in $VAULT work other; do
    sed "s/^/XEN-FLOWS-CONSOLE $q /" "$(flows_log $q)" | grep -av 'FLOWS-AGENT.*reconnect' | tail -60
  done
  sed 's/^/XEN-FLOWS-QREXECD /' /tmp/flows-qrexecd.log | tail -60
  sed 's/^/XEN-FLOWS-ADMIN /' /tmp/flows-admin.log /tmp/flows-add.txt | tail -10
  xl list $VAULT > /dev/null 2>&1 && xl destroy $VAULT
fi
