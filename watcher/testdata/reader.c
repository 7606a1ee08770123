/* The workload of the agent's completeness tests, built static so that the image needs no
 * libc; it reports what it read, the tests' ground truth.
 * usage: reader [-g GOFILE] [-y] REPORT DIR
 * It waits until GOFILE exists (when given), reads every regular file of DIR to its end in
 * 4 KiB reads, yielding the CPU after each file with -y, writes "PATH BYTES" per file to
 * REPORT ("-" for stdout), then listens on a TCP port, which makes it ready, and waits to
 * be killed. */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	const char *gofile = NULL;
	int yield = 0, opt;
	while ((opt = getopt(argc, argv, "g:y")) != -1) {
		switch (opt) {
		case 'g':
			gofile = optarg;
			break;
		case 'y':
			yield = 1;
			break;
		default:
			return 2;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "usage: reader [-g GOFILE] [-y] REPORT DIR\n");
		return 2;
	}
	const char *report = argv[optind], *dir = argv[optind + 1];
	while (gofile && access(gofile, F_OK) != 0)
		usleep(1000);

	FILE *out = strcmp(report, "-") == 0 ? stdout : fopen(report, "w");
	if (!out)
		die(report);
	DIR *d = opendir(dir);
	if (!d)
		die(dir);
	struct dirent *de;
	static char buf[4096], path[4096];
	while ((de = readdir(d))) {
		if (de->d_type != DT_REG)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			die(path);
		long total = 0;
		ssize_t n;
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			total += n;
		if (n < 0)
			die(path);
		close(fd);
		fprintf(out, "%s %ld\n", path, total);
		if (yield)
			sched_yield();
	}
	closedir(d);
	if (fclose(out))
		die(report);

	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET }; /* any address, any port */
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 1))
		die("listen");
	for (;;)
		pause();
}
