/* The entrypoint of the container cold-start test, built static so that the image needs no
 * libc. Every step has a ground truth the test knows.
 * usage: coldstart LIBSDIR PORT WEIGHTS OFF:LEN...
 * It reads every file in the subdirectories of LIBSDIR; gets the model: reads the file that
 * env MODEL_CACHE names if it opens, else downloads MODEL_URL_PATH from 127.0.0.1:PORT over
 * HTTP/1.0 until the server closes and writes the body to env MODEL_PATH if set; maps each
 * OFF:LEN range of WEIGHTS (widened to whole pages) on its own and touches every page of
 * it; opens the stand-in accelerator device env GPU_DEVICE names, if set, and sends it
 * ioctls; then listens on a loopback port and waits to be killed. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL_URL_PATH "/hub/shard.safetensors" /* ctrtest.ShardURLPath */

static char buf[1 << 16];

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void read_all(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		;
	if (n < 0)
		die(path);
	close(fd);
}

static void libs(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		die(dir);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char sub[4096];
		snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
		DIR *s = opendir(sub);
		if (!s)
			die(sub);
		struct dirent *f;
		while ((f = readdir(s))) {
			if (f->d_name[0] == '.')
				continue;
			char p[4096];
			snprintf(p, sizeof(p), "%s/%s", sub, f->d_name);
			read_all(p);
		}
		closedir(s);
	}
	closedir(d);
}

/* write_all writes n bytes of p to fd, or dies. */
static void write_all(int fd, const char *p, size_t n, const char *what)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0)
			die(what);
		p += w;
		n -= w;
	}
}

/* fetch downloads MODEL_URL_PATH from 127.0.0.1:port over HTTP/1.0 and writes the body to
 * out (-1: discards it). */
static void fetch(int port, int out)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	char req[256];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", MODEL_URL_PATH, port);
	write_all(s, req, n, "send");
	/* Skip the headers: everything up to the first CRLF CRLF. */
	const char *end = "\r\n\r\n";
	int matched = 0;
	ssize_t got;
	while ((got = read(s, buf, sizeof(buf))) > 0) {
		char *p = buf;
		while (matched < 4 && p < buf + got)
			matched = *p++ == end[matched] ? matched + 1 : (p[-1] == '\r' ? 1 : 0);
		if (matched == 4 && out >= 0)
			write_all(out, p, buf + got - p, "write model");
	}
	if (got < 0)
		die("read");
	close(s);
}

/* model gets the model: from the file MODEL_CACHE names when it opens (a staged copy),
 * else from the origin, into MODEL_PATH when set (its directory is created). */
static void model(int port)
{
	const char *cache = getenv("MODEL_CACHE");
	if (cache && access(cache, R_OK) == 0) {
		read_all(cache);
		return;
	}
	const char *path = getenv("MODEL_PATH");
	int out = -1;
	if (path && *path) {
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s", path);
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = 0;
			mkdir(dir, 0755); /* one level; an existing one is fine */
		}
		out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (out < 0)
			die(path);
	}
	fetch(port, out);
	if (out >= 0 && close(out) < 0)
		die(path);
}

static void load(const char *path, int n, char **ranges)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);
	long page = sysconf(_SC_PAGESIZE);
	volatile unsigned long sum = 0;
	for (int i = 0; i < n; i++) {
		long long off, len;
		if (sscanf(ranges[i], "%lld:%lld", &off, &len) != 2)
			die(ranges[i]);
		long long start = off & ~(page - 1);
		size_t size = off + len - start;
		unsigned char *m = mmap(0, size, PROT_READ, MAP_PRIVATE, fd, start);
		if (m == MAP_FAILED)
			die("mmap");
		for (size_t p = 0; p < size; p += page)
			sum += m[p];
		munmap(m, size);
	}
	close(fd);
}

/* gpu opens the accelerator device GPU_DEVICE names, when set, and sends it GPU_IOCTLS
 * ioctls as a driver's initialisation does. A test mounts a stand-in character device
 * there (the node of /dev/null, which runc's device rules allow), so the ioctls fail with
 * ENOTTY; what counts is that they are made. */
#define GPU_IOCTLS 5
static void gpu(void)
{
	const char *dev = getenv("GPU_DEVICE");
	if (!dev)
		return;
	int fd = open(dev, O_RDWR);
	if (fd < 0)
		die(dev);
	for (int i = 0; i < GPU_IOCTLS; i++)
		ioctl(fd, 0xc020462a, buf);
	close(fd);
}

static void serve(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 16) < 0)
		die("listen");
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s LIBSDIR PORT WEIGHTS OFF:LEN...\n", argv[0]);
		return 2;
	}
	libs(argv[1]);
	model(atoi(argv[2]));
	load(argv[3], argc - 4, argv + 4);
	gpu();
	serve();
}
