/* The entrypoint of the container cold-start test, built static so that the image needs no
 * libc. Every step has a ground truth the test knows.
 * usage: coldstart LIBSDIR PORT WEIGHTS OFF:LEN...
 * It reads every file in the subdirectories of LIBSDIR, downloads from 127.0.0.1:PORT until
 * the server closes, maps each OFF:LEN range of WEIGHTS (widened to whole pages) on its own
 * and touches every page of it, then listens on a loopback port and waits to be killed. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

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

static void fetch(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	const char *req = "GET /shard HTTP/1.0\r\n\r\n";
	if (write(s, req, strlen(req)) < 0)
		die("write");
	ssize_t n;
	while ((n = read(s, buf, sizeof(buf))) > 0)
		;
	if (n < 0)
		die("read");
	close(s);
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
	fetch(atoi(argv[2]));
	load(argv[3], argc - 4, argv + 4);
	serve();
}
