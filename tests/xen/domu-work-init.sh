#!/bin/busybox sh
# /init of flow 3's Linux PV AppVMs (Debian's kernel; busybox, qubes-vm-agent, OpenSSH): the
# qrexec agent over platform-dom0 (/dev/xen/{evtchn,gntdev,gntalloc,xenbus}), the split-SSH
# forwarder as SSH_AUTH_SOCK, then flows.role=work: ssh-add -l, ssh into its own sshd on
# loopback with the vault's key; flows.role=other: the same call, which dom0's policy refuses.
# Prints "FLOWS-CHECK <role> <check> ok|FAIL <detail>" lines on hvc0, then "FLOWS: done".
/bin/busybox --install -s /bin
export PATH=/usr/bin:/usr/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
exec > /dev/console 2>&1 < /dev/null
ROLE=$(sed -n 's/.*flows\.role=\([a-z]*\).*/\1/p' /proc/cmdline)
VAULT=$(sed -n 's/.*flows\.vault=\([a-z0-9-]*\).*/\1/p' /proc/cmdline)
VAULT=${VAULT:-sshagent-unikernel}
echo "FLOWS: init, role $ROLE, kernel $(uname -r), vault $VAULT"
check() {  # check NAME RC DETAIL
  if [ "$2" = 0 ]; then echo "FLOWS-CHECK $ROLE $1 ok $3"; else echo "FLOWS-CHECK $ROLE $1 FAIL $3"; fi
}
ip link set lo up
for m in xen-evtchn xen-gntdev xen-gntalloc; do
  insmod /$m.ko || echo "FLOWS: insmod $m failed"
done
ls -l /dev/xen/ | sed 's/^/FLOWS: dev /'
qubes-vm-agent agent > /tmp/agent.log 2>&1 &
( tail -f /tmp/agent.log | sed 's/^/FLOWS-AGENT /' ) &
export SSH_AUTH_SOCK=/tmp/ssh-agent.sock
qubes-vm-agent forward --listen $SSH_AUTH_SOCK --target "$VAULT" --service qubes.SshAgent+work \
  > /tmp/forward.log 2>&1 &
i=0
until [ -S $SSH_AUTH_SOCK ] || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done

if [ "$ROLE" = other ]; then
  # The policy has no rule letting this qube reach the vault: refused (ssh-add sees the
  # connection closed) and qrexec-client-vm exits 126.
  out=$(ssh-add -l 2>&1); rc=$?
  [ $rc != 0 ] && ! echo "$out" | grep -q ED25519
  check ssh-add-refused $? "ssh-add -l rc=$rc: $(echo "$out" | head -1)"
  printf '\0\0\0\1\13' > /tmp/req
  qrexec-client-vm "$VAULT" qubes.SshAgent+work < /tmp/req > /tmp/ans 2>/tmp/err; rc=$?
  [ $rc = 126 ] && [ ! -s /tmp/ans ]
  check call-refused $? "qrexec-client-vm $VAULT qubes.SshAgent+work exit $rc ($(head -c 80 /tmp/err)), $(wc -c < /tmp/ans) bytes answered"
  echo "FLOWS: done"
  while :; do sleep 3600; done
fi

# The first answer of the vault through the whole path (exit 0 = keys, 1 = no keys yet).
i=0
while :; do
  u0=$(cut -d' ' -f1 /proc/uptime)
  ssh-add -l > /tmp/list 2>&1; rc=$?
  u1=$(cut -d' ' -f1 /proc/uptime)
  [ $rc = 0 ] || [ $rc = 1 ] && break
  i=$((i + 1)); [ $i -ge 600 ] && break
  sleep 0.5
done
echo "FLOWS: agent-answered rc=$rc after $i retries, at ${u1}s of uptime (that ssh-add -l took $(echo "$u0 $u1" | awk '{printf "%.2f", $2 - $1}') s): $(head -1 /tmp/list)"
u0=$(cut -d' ' -f1 /proc/uptime); ssh-add -l > /dev/null 2>&1; u1=$(cut -d' ' -f1 /proc/uptime)
echo "FLOWS: a second ssh-add -l took $(echo "$u0 $u1" | awk '{printf "%.2f", $2 - $1}') s"
# The same request without OpenSSH: qrexec-client-vm alone (one call, 5 bytes each way).
printf '\0\0\0\1\13' > /tmp/req
u0=$(cut -d' ' -f1 /proc/uptime)
qrexec-client-vm "$VAULT" qubes.SshAgent+work < /tmp/req > /tmp/ans 2>/dev/null; rc=$?
u1=$(cut -d' ' -f1 /proc/uptime)
echo "FLOWS: qrexec-client-vm request-identities: exit $rc, $(wc -c < /tmp/ans) bytes, $(echo "$u0 $u1" | awk '{printf "%.2f", $2 - $1}') s"
# dom0 adds the key through the vault's admin service meanwhile: wait until it is listed.
i=0
until grep -q 'flows@lab' /tmp/list || [ $i -ge 300 ]; do
  sleep 1; i=$((i + 1)); ssh-add -l > /tmp/list 2>&1
done
grep -q 'flows@lab (ED25519)' /tmp/list
check ssh-add-list $? "$(head -1 /tmp/list) (after ${i} s)"
# No private key in this qube: the public key comes from the vault, through the agent.
ssh-add -L > /root/.ssh/authorized_keys 2>/dev/null
[ -s /root/.ssh/authorized_keys ] && ! ls /root/.ssh/id_* > /dev/null 2>&1
check no-private-key $? "authorized_keys from ssh-add -L: $(cut -c1-40 /root/.ssh/authorized_keys)..., no id_* in ~/.ssh"
ssh-keygen -q -t ed25519 -N '' -f /tmp/host_key
/usr/sbin/sshd -f /dev/null -p 22 -o ListenAddress=127.0.0.1 -h /tmp/host_key \
  -o AuthorizedKeysFile=/root/.ssh/authorized_keys -o StrictModes=no -o UsePAM=no \
  -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no \
  -o KbdInteractiveAuthentication=no -E /tmp/sshd.log
SSH="ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=60"
out=$($SSH root@127.0.0.1 'echo "flows-$((6 * 7)) as $(id -un)"' 2>/tmp/ssh.err); rc=$?
[ $rc = 0 ] && [ "$out" = "flows-42 as root" ]
check ssh-login $? "ssh root@127.0.0.1 with the vault's key: rc=$rc \"$out\" $([ $rc = 0 ] || tail -2 /tmp/ssh.err /tmp/sshd.log | tr '\n' ' ')"
grep -a 'Accepted publickey' /tmp/sshd.log | tail -1 | sed 's/^/FLOWS: sshd /'
out=$(SSH_AUTH_SOCK= $SSH root@127.0.0.1 true 2>&1); rc=$?
[ $rc != 0 ]
check ssh-without-agent-refused $? "rc=$rc $(echo "$out" | tail -1)"
# The vault's admin service is dom0's only: policy refuses it to this qube (126).
qrexec-client-vm "$VAULT" qubes.SshAgentAdmin+work < /dev/null > /dev/null 2>/tmp/err; rc=$?
[ $rc = 126 ]
check admin-refused $? "qrexec-client-vm $VAULT qubes.SshAgentAdmin+work exit $rc"
sed 's/^/FLOWS-FORWARD /' /tmp/forward.log | tail -5
echo "FLOWS: done"
while :; do sleep 3600; done
