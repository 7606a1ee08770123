/* touchall maps a file at an address aligned to the PMD size (2 MiB), reads one byte of
 * every page in order, and prints how much of the mapping the kernel mapped with PMDs
 * (FilePmdMapped in /proc/self/smaps): a sequential scan makes readahead build folios of
 * that size, and a fault in such a folio maps all of it. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PMD (2UL << 20)

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: touchall FILE\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	/* Reserve, then map the file at the first PMD boundary inside the reservation. */
	char *res = mmap(NULL, st.st_size + PMD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	char *base = (char *)(((uintptr_t)res + PMD - 1) & ~(PMD - 1));
	char *p = mmap(base, st.st_size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap file");
		return 1;
	}
	unsigned long sum = 0;
	for (off_t off = 0; off < st.st_size; off += 4096)
		sum += (unsigned char)p[off];

	char start[32], line[256];
	snprintf(start, sizeof start, "%lx-", (unsigned long)p);
	FILE *smaps = fopen("/proc/self/smaps", "r");
	int in = 0;
	long kb = -1;
	while (smaps && fgets(line, sizeof line, smaps)) {
		if (strchr(line, '-') && strchr(line, ' ') > strchr(line, '-'))
			in = strncmp(line, start, strlen(start)) == 0;
		if (in && sscanf(line, "FilePmdMapped: %ld kB", &kb) == 1)
			break;
	}
	printf("MARK pmd_kb %ld\nMARK sum %lu\n", kb, sum);
	return 0;
}
