// cuinit: ground truth for coldtrace's CUDA uprobes on a real driver. It times
// cuInit and cuDevicePrimaryCtxRetain with its own clock, prints both, then
// listens so that coldtrace sees it ready.
#include <arpa/inet.h>
#include <cuda.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double ms(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(void) {
	CUdevice dev;
	CUcontext ctx;
	double t0 = ms();
	CUresult r = cuInit(0);
	double t1 = ms();
	if (r != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS) {
		fprintf(stderr, "cuInit: %d\n", r);
		return 1;
	}
	double t2 = ms();
	r = cuDevicePrimaryCtxRetain(&ctx, dev);
	double t3 = ms();
	if (r != CUDA_SUCCESS) {
		fprintf(stderr, "cuDevicePrimaryCtxRetain: %d\n", r);
		return 1;
	}
	printf("cuInit_ms=%.3f cuDevicePrimaryCtxRetain_ms=%.3f\n", t1 - t0, t3 - t2);
	fflush(stdout);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1))
		return 1;
	pause();
	return 0;
}
