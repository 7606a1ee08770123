/* A start-up-heavy workload for the overhead benchmark: many small file reads, one large
 * sequential read and a loopback download, timed by itself so that traced and untraced
 * runs are measured the same way.
 * usage: startup DIR NFILES BIGFILE PORT
 * prints "ELAPSED <ns>" */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 20];

static long long now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	long long start = now();
	int n = atoi(argv[2]);
	char p[4096];
	for (int i = 0; i < n; i++) {
		snprintf(p, sizeof(p), "%s/f%05d", argv[1], i);
		int fd = open(p, O_RDONLY);
		if (fd < 0 || read(fd, buf, 4096) < 0)
			return 1;
		close(fd);
	}
	int fd = open(argv[3], O_RDONLY);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);

	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[4])) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)))
		return 1;
	const char *req = "GET / HTTP/1.0\r\n\r\n";
	if (write(s, req, strlen(req)) < 0)
		return 1;
	while (read(s, buf, sizeof(buf)) > 0)
		;
	close(s);
	printf("ELAPSED %lld\n", now() - start);
	return 0;
}
