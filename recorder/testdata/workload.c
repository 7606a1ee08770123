/* The tracer's test workload: every step has a ground truth the test knows.
 * usage: workload DIR PORT DEVICE LIBCUDA
 * DIR holds a.dat .. f.dat and model.safetensors, written by the test; PORT is a loopback
 * HTTP server that sends a known number of bytes; DEVICE is a stand-in accelerator node.
 * Each step prints "MARK name <CLOCK_MONOTONIC ns>" before and after it, and the operation that
 * defines a phase boundary is bracketed by marks taken right before and right after it (the
 * tracer's timestamp must lie between them, however late the machine lets the workload run). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static char *dir;

static long long now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void mark_at(const char *name, long long ns)
{
	printf("MARK %s %lld\n", name, ns);
	fflush(stdout);
}

static void mark(const char *name)
{
	mark_at(name, now());
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, 0);
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* open_random opens DIR/name with readahead off, so that pages read are pages missed. */
static int open_random(const char *name)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, O_RDONLY);
	if (fd < 0)
		die(p);
	posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
	return fd;
}

static char buf[1 << 20];

static void files(void)
{
	/* a.dat: three sequential reads, [0, 12288), then pread64 [40960, 49152) */
	int fd = open_random("a.dat");
	for (int i = 0; i < 3; i++)
		if (read(fd, buf, 4096) != 4096)
			die("read a");
	if (pread(fd, buf, 8192, 40960) != 8192)
		die("pread a");
	close(fd);

	/* b.dat: readv of two 4 KiB buffers at the file position, [0, 8192) */
	fd = open_random("b.dat");
	struct iovec iov[2] = { { buf, 4096 }, { buf + 4096, 4096 } };
	if (readv(fd, iov, 2) != 8192)
		die("readv b");
	close(fd);

	/* c.dat: preadv [16384, 24576), preadv2 [65536, 69632), preadv2 at the position [0, 4096) */
	fd = open_random("c.dat");
	struct iovec one = { buf, 8192 };
	if (preadv(fd, &one, 1, 16384) != 8192)
		die("preadv c");
	one.iov_len = 4096;
	if (preadv2(fd, &one, 1, 65536, 0) != 4096)
		die("preadv2 c");
	if (preadv2(fd, &one, 1, -1, 0) != 4096)
		die("preadv2 c pos");
	close(fd);

	/* d.dat: sendfile [8192, 24576) to /dev/null */
	fd = open_random("d.dat");
	int null = open("/dev/null", O_WRONLY);
	off_t off = 8192;
	if (sendfile(null, fd, &off, 16384) != 16384)
		die("sendfile d");
	close(fd);

	/* e.dat: copy_file_range [0, 32768) into a scratch file */
	fd = open_random("e.dat");
	char out[4096];
	snprintf(out, sizeof(out), "%s/scratch.out", dir);
	int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	loff_t in_off = 0;
	if (copy_file_range(fd, &in_off, ofd, NULL, 32768, 0) != 32768)
		die("copy_file_range e");
	close(ofd);
	close(fd);

	/* f.dat: splice [4096, 12288) into a pipe */
	fd = open_random("f.dat");
	int pfd[2];
	if (pipe(pfd))
		die("pipe");
	loff_t soff = 4096;
	if (splice(fd, &soff, pfd[1], NULL, 8192, 0) != 8192)
		die("splice f");
	if (read(pfd[0], buf, 8192) != 8192)
		die("drain pipe");
	close(pfd[0]);
	close(pfd[1]);
	close(fd);
	close(null);
}

static long fetch(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	/* The fetch starts at connect and ends at the last read that returned data. */
	mark("connect");
	if (connect(s, (struct sockaddr *)&a, sizeof(a)))
		die("connect");
	mark("connect_end");
	const char *req = "GET /shard.bin HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
	if (write(s, req, strlen(req)) < 0)
		die("write");
	long total = 0;
	long long before = 0, after = 0;
	for (;;) {
		long long b = now();
		ssize_t n = read(s, buf, sizeof(buf));
		long long e = now();
		if (n <= 0)
			break;
		total += n;
		before = b, after = e;
	}
	mark_at("last_recv", before);
	mark_at("last_recv_end", after);
	close(s);
	return total;
}

static void load(void)
{
	/* The header through pread, [0, 4096) */
	int fd = open_random("model.safetensors");
	uint64_t hlen;
	/* The first access to the weights: the load starts (and init ends) in it. */
	mark("first_weights");
	if (pread(fd, &hlen, 8, 0) != 8)
		die("pread header");
	mark("first_weights_end");
	if (pread(fd, buf, 4088, 8) != 4088)
		die("pread header");
	/* Tensors through a mapping at a 2 MiB-aligned address, every page of [1 MiB, 2 MiB) */
	size_t size = 4 << 20;
	char *area = mmap(NULL, size + (2 << 20), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *at = (char *)(((uintptr_t)area + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1));
	char *m = mmap(at, size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
	if (m == MAP_FAILED)
		die("mmap");
	madvise(m, size, MADV_RANDOM);
	volatile char sum = 0;
	for (size_t o = 1 << 20; o < 2 << 20; o += 4096)
		sum += m[o];
	/* More tensors through read: [3 MiB, 3 MiB + 256 KiB) */
	lseek(fd, 3 << 20, SEEK_SET);
	for (int i = 0; i < 3; i++)
		if (read(fd, buf, 65536) != 65536)
			die("read weights");
	/* The last access to the weights: the load ends in it. */
	mark("last_weights");
	if (read(fd, buf, 65536) != 65536)
		die("read weights");
	mark("last_weights_end");
	munmap(m, size);
	close(fd);
}

/* await_probe waits until a uprobe is on fn: the kernel writes a breakpoint (int3 on x86)
 * over the probed instruction in every mapping of the library. */
static void await_probe(void *fn, const char *name)
{
	for (int i = 0; i < 10000; i++) {
		if (*(volatile unsigned char *)fn == 0xCC)
			return;
		sleep_ms(1);
	}
	fprintf(stderr, "no uprobe on %s after 10 s\n", name);
	exit(1);
}

static void gpu(const char *device, const char *lib)
{
	/* The device's open starts the GPU phase; cuCtxCreate_v2's return ends it. */
	mark("device_open");
	int fd = open(device, O_RDWR);
	mark("device_open_end");
	if (fd < 0)
		die(device);
	for (int i = 0; i < 7; i++)
		ioctl(fd, 0xC0DE0000 + i, 0); /* a null device refuses them: the calls still count */
	void *h = dlopen(lib, RTLD_NOW);
	if (!h)
		die(dlerror());
	int (*init)(unsigned) = dlsym(h, "cuInit");
	int (*retain)(void **, int) = dlsym(h, "cuDevicePrimaryCtxRetain");
	int (*create)(void **, unsigned, int) = dlsym(h, "cuCtxCreate_v2");
	/* The tracer attaches its uprobes when it sees the library open, however long a busy
	 * machine makes that take: wait for them rather than for a fixed time. */
	await_probe((void *)init, "cuInit");
	await_probe((void *)retain, "cuDevicePrimaryCtxRetain");
	await_probe((void *)create, "cuCtxCreate_v2");
	void *ctx;
	/* Each call between marks: the call's own probes fire between them, however late the
	 * machine lets the caller run. */
	mark("cuInit");
	if (init(0))
		die("cuInit");
	mark("cuInit_end");
	mark("cuDevicePrimaryCtxRetain");
	if (retain(&ctx, 0))
		die("cuDevicePrimaryCtxRetain");
	mark("cuDevicePrimaryCtxRetain_end");
	mark("cuCtxCreate_v2");
	if (create(&ctx, 0, 0))
		die("cuCtxCreate_v2");
	mark("cuCtxCreate_v2_end");
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s DIR PORT DEVICE LIBCUDA\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	mark("start");
	sleep_ms(50);
	mark("files");
	files();
	mark("files_end");
	sleep_ms(50);
	mark("fetch");
	long got = fetch(atoi(argv[2]));
	mark("fetch_end");
	printf("FETCHED %ld\n", got);
	sleep_ms(50);
	mark("load");
	load();
	mark("load_end");
	sleep_ms(50);
	mark("gpu");
	gpu(argv[3], argv[4]);
	mark("gpu_end");
	sleep_ms(50);

	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (bind(s, (struct sockaddr *)&a, sizeof(a)))
		die("bind");
	/* The recorder stops the workload with SIGTERM once it sees the listen: held off until
	 * the mark after it is out. */
	sigset_t term;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, NULL);
	mark("listen");
	int err = listen(s, 1);
	mark("listen_end");
	if (err)
		die("listen");
	sigprocmask(SIG_UNBLOCK, &term, NULL);
	pause();
	return 0;
}
