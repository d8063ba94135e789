#!/usr/bin/python3
# Runs in the lab's dom0: pings the unikernel (raw ICMP; the root has no ping binary) and runs a
# lockstep UDP echo against its port 7. Prints one "NET <check> ok|FAIL <detail>" line each.
import os, socket, struct, sys, time

ip = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp.settimeout(2)
ok, rtts = 0, []
for seq in range(1, 11):
    payload = b"xen-smoke ping %d" % seq
    hdr = struct.pack("!BBHHH", 8, 0, 0, 0x5A5A, seq)
    pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + payload), 0x5A5A, seq) + payload
    t = time.time()
    icmp.sendto(pkt, (ip, 0))
    while time.time() - t < 2:
        try:
            data, _ = icmp.recvfrom(2048)
        except socket.timeout:
            break
        r = data[(data[0] & 15) * 4:]
        if r[0] == 0 and struct.unpack("!HH", r[4:8]) == (0x5A5A, seq) and r[8:] == payload and csum(r) == 0:
            ok += 1
            rtts.append((time.time() - t) * 1000)
            break
print("NET ping %s %d/10 echo replies (first one after ARP), rtt avg %.1f ms max %.1f ms"
      % ("ok" if ok == 10 else "FAIL", ok, sum(rtts) / max(len(rtts), 1), max(rtts or [0])), flush=True)

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1)
# A datagram whose echo has not come within 1 s is "overdue"; an echo that comes later still is
# "late", not lost. Lost = never answered (checked again 5 s after the last one); stray = an
# echo matching nothing we sent.
overdue = set()
late = bad = 0


def take(data, addr, msg):
    global late, bad
    if data == msg and addr == (ip, 7):
        return True
    if data in overdue and addr == (ip, 7):
        overdue.discard(data)
        late += 1
    else:
        bad += 1
    return False


t0 = time.time()
for i in range(count):
    msg = struct.pack("!I", i) + os.urandom(28)
    u.sendto(msg, (ip, 7))
    while True:
        try:
            data, addr = u.recvfrom(2048)
        except socket.timeout:
            overdue.add(msg)
            break
        if take(data, addr, msg):
            break
    if len(overdue) > 50 and len(overdue) > i // 2:
        count = i + 1  # mostly lost: stop instead of timing out 10,000 times
        break
dt = time.time() - t0
u.settimeout(5)
while overdue:
    try:
        data, addr = u.recvfrom(2048)
    except socket.timeout:
        break
    take(data, addr, None)
lost = len(overdue)
print("NET udp-echo %s %d datagrams lockstep, %d lost, %d late (echo after 1 s), %d stray, %.1f s (%.0f/s)"
      % ("ok" if lost == 0 and bad == 0 else "FAIL", count, lost, late, bad, dt, count / dt), flush=True)
