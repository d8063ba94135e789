/* Interop peer over Debian's real libxenvchan (run against the hosted xen-shims).
 *
 * usage: vchan_peer server|client PEER_DOMID PORT LEFT_MIN RIGHT_MIN SEND RECV [eof|bench]
 *   own domid: env QUBES_HOSTED_DOMID. The server advertises at the Qubes path
 *   data/vchan/<client>/<port> (relative to itself) and prints "READY" once its keys exist.
 *   SEND bytes of the per-direction test stream are written while RECV bytes are read and
 *   compared byte for byte; "eof": after RECV bytes the peer must close (clean EOF), and this
 *   side closes right after sending (mid-stream close). "bench": no stream generation or
 *   checks, prints the receive time. Prints "OK sent=.. recv=.. fnv_tx=.. fnv_rx=.. ns=..".
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxenvchan.h>

#define CHUNK 65536

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/* Byte i of a stream is byte i%8 (little-endian) of splitmix64(seed + i/8). */
static void stream_fill(uint64_t seed, uint64_t pos, uint8_t *buf, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t p = pos + i;
		buf[i] = (uint8_t)(splitmix64(seed + p / 8) >> (8 * (p % 8)));
	}
}

static uint64_t fnv1a(uint64_t h, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001B3ull;
	}
	return h;
}

#define FNV_INIT 0xCBF29CE484222325ull
#define SEED_SERVER_TX 0x5EED000000000001ull
#define SEED_CLIENT_TX 0x5EED000000000002ull

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int die(const char *what)
{
	fprintf(stderr, "vchan_peer(c): %s (errno %d: %s)\n", what, errno, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: %s server|client PEER PORT LEFT_MIN RIGHT_MIN SEND RECV [eof|bench]\n", argv[0]);
		return 2;
	}
	int server = strcmp(argv[1], "server") == 0;
	int peer = atoi(argv[2]);
	int port = atoi(argv[3]);
	size_t left_min = strtoull(argv[4], NULL, 0), right_min = strtoull(argv[5], NULL, 0);
	uint64_t to_send = strtoull(argv[6], NULL, 0), to_recv = strtoull(argv[7], NULL, 0);
	int eof_mode = argc > 8 && strcmp(argv[8], "eof") == 0;
	int bench = argc > 8 && strcmp(argv[8], "bench") == 0;
	const char *me_s = getenv("QUBES_HOSTED_DOMID");
	if (!me_s)
		return die("QUBES_HOSTED_DOMID unset");
	int me = atoi(me_s);

	char path[128];
	struct libxenvchan *v;
	if (server) {
		snprintf(path, sizeof path, "data/vchan/%d/%d", peer, port);
		v = libxenvchan_server_init(NULL, peer, path, left_min, right_min);
		if (!v)
			return die("libxenvchan_server_init");
		printf("READY\n");
		fflush(stdout);
	} else {
		snprintf(path, sizeof path, "/local/domain/%d/data/vchan/%d/%d", peer, me, port);
		v = libxenvchan_client_init(NULL, peer, path);
		if (!v)
			return die("libxenvchan_client_init");
	}
	v->blocking = 0;

	uint64_t tx_seed = server ? SEED_SERVER_TX : SEED_CLIENT_TX;
	uint64_t rx_seed = server ? SEED_CLIENT_TX : SEED_SERVER_TX;
	static uint8_t out[CHUNK], in[CHUNK], want[CHUNK];
	uint64_t sent = 0, recvd = 0, fnv_tx = FNV_INIT, fnv_rx = FNV_INIT;
	size_t out_len = 0, out_off = 0;
	uint64_t t_first = 0, t_last = 0;
	int fd = libxenvchan_fd_for_select(v);
	int saw_eof = 0;

	while (sent < to_send || recvd < to_recv || (eof_mode && !saw_eof && to_recv > 0)) {
		int progress = 0;
		if (sent < to_send) {
			if (out_off == out_len) {
				uint64_t left = to_send - sent;
				out_len = left < CHUNK ? (size_t)left : CHUNK;
				out_off = 0;
				if (!bench) {
					stream_fill(tx_seed, sent, out, out_len);
					fnv_tx = fnv1a(fnv_tx, out, out_len);
				}
			}
			int w = libxenvchan_write(v, out + out_off, out_len - out_off);
			if (w < 0)
				return die("libxenvchan_write");
			if (w > 0) {
				out_off += w;
				sent += w;
				progress = 1;
			}
			if (sent == to_send && eof_mode) {
				/* Mid-stream close: the peer is still reading what we sent. */
				libxenvchan_close(v);
				printf("OK sent=%" PRIu64 " recv=%" PRIu64 " fnv_tx=%016" PRIx64 " fnv_rx=%016" PRIx64 " ns=0\n",
				       sent, recvd, fnv_tx, fnv_rx);
				return 0;
			}
		}
		if (recvd < to_recv || (eof_mode && !saw_eof && to_recv > 0)) {
			int r = libxenvchan_read(v, in, CHUNK);
			if (r < 0) {
				saw_eof = 1;
				if (!eof_mode || recvd != to_recv) {
					fprintf(stderr, "vchan_peer(c): EOF after %" PRIu64 " of %" PRIu64 " bytes\n", recvd, to_recv);
					return 1;
				}
				break;
			}
			if (r > 0) {
				if (!t_first)
					t_first = now_ns();
				if (recvd + r > to_recv) {
					fprintf(stderr, "vchan_peer(c): %" PRIu64 " bytes more than expected\n", recvd + r - to_recv);
					return 1;
				}
				if (!bench) {
					stream_fill(rx_seed, recvd, want, r);
					if (memcmp(in, want, r) != 0) {
						fprintf(stderr, "vchan_peer(c): data mismatch in bytes %" PRIu64 "..+%d\n", recvd, r);
						return 1;
					}
					fnv_rx = fnv1a(fnv_rx, in, r);
				}
				recvd += r;
				t_last = now_ns();
				progress = 1;
			}
		}
		if (!progress) {
			/* data_ready/buffer_space post the notify requests before we sleep. */
			if (libxenvchan_data_ready(v) > 0 || (sent < to_send && libxenvchan_buffer_space(v) > 0))
				continue;
			if (!libxenvchan_is_open(v) && libxenvchan_data_ready(v) == 0 && !eof_mode)
				return die("peer closed early");
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int n = poll(&p, 1, 1000);
			if (n < 0 && errno != EINTR)
				return die("poll");
			if (n > 0 && libxenvchan_wait(v) < 0)
				return die("libxenvchan_wait");
		}
	}
	printf("OK sent=%" PRIu64 " recv=%" PRIu64 " fnv_tx=%016" PRIx64 " fnv_rx=%016" PRIx64 " ns=%" PRIu64 "\n",
	       sent, recvd, fnv_tx, fnv_rx, t_last - t_first);
	fflush(stdout);
	libxenvchan_close(v);
	return 0;
}
