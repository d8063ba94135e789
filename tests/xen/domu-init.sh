#!/bin/busybox sh
# /init of the lab's Linux PV domU (Debian's kernel, busybox-static, xen-netfront.ko): its vif's
# backend is the unikernel (netback in xen-smoke), so it brings eth0 up and pings the unikernel,
# printing "DOMU-PING <received>/<sent>" on its console (hvc0, logged by xenconsoled), then idles.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec > /dev/console 2>&1 < /dev/null
IP=$(sed -n 's/.*domu\.ip=\([0-9.]*\).*/\1/p' /proc/cmdline)
PEER=$(sed -n 's/.*domu\.peer=\([0-9.]*\).*/\1/p' /proc/cmdline)
echo "DOMU: init, kernel $(uname -r), ip $IP peer $PEER"
insmod /xen-netfront.ko && echo "DOMU: xen-netfront loaded"
i=0
until [ -e /sys/class/net/eth0 ] || [ $i -ge 120 ]; do sleep 1; i=$((i + 1)); done
ip link set eth0 up
ip addr add "$IP/24" dev eth0
echo "DOMU: eth0 $(cat /sys/class/net/eth0/address) $(cat /sys/class/net/eth0/operstate) after ${i} s"
# The first answer may take a while: the unikernel connects the vif when it sees it.
i=0
until ping -c 1 -W 2 "$PEER" > /dev/null 2>&1 || [ $i -ge 90 ]; do i=$((i + 1)); done
echo "DOMU: first echo reply after $i tries"
ping -c 10 -W 5 "$PEER" > /tmp/ping.txt 2>&1
cat /tmp/ping.txt
got=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping.txt)
echo "DOMU-PING ${got:-0}/10"
ip -s link show eth0
echo "DOMU: done"
# Stay up: dom0 checks both ends are Connected, then destroys us (the toolstack's removal is
# what the netback must handle; a domU powering itself off would race the state check).
while :; do sleep 3600; done
