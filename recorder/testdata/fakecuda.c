/* A stand-in for libcuda.so.1: it exports the driver calls coldtrace uprobes, each taking
 * a known time, so that the tests can check the measured durations. */
#include <time.h>

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, 0);
}

int cuInit(unsigned int flags) { (void)flags; sleep_ms(200); return 0; }
int cuDevicePrimaryCtxRetain(void **ctx, int dev) { (void)dev; *ctx = (void *)1; sleep_ms(20); return 0; }
int cuCtxCreate_v2(void **ctx, unsigned int flags, int dev) { (void)flags; (void)dev; *ctx = (void *)2; sleep_ms(30); return 0; }
