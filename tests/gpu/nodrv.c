/*
** runtime/cuda.c without a driver: every entry point fails with a message
** that names the missing driver; nothing crashes. Run with KVCC_LIBCUDA set to
** a path that does not exist (make check-emu does), so the test means the
** same on a machine with a GPU.
*/
#include <stdio.h>
#include <string.h>
#include "runtime/cuda.h"

int main(void)
{
	char why[600] = "";
	int fails = 0;
	if (kr_cuda_driver_load(why, sizeof why) == 0 || !strstr(why, "CUDA driver not found"))
		printf("FAIL nodrv: kr_cuda_driver_load: '%s'\n", why), fails++;
	KpCudaOut art;
	memset(&art, 0, sizeof art);
	KrCuda *m = (KrCuda *)1;
	why[0] = 0;
	if (kr_cuda_open(&art, 0, &m, why, sizeof why) == 0 || m != NULL || !strstr(why, "CUDA driver not found"))
		printf("FAIL nodrv: kr_cuda_open: '%s'\n", why), fails++;
	if (kr_cuda_alloc(16) != NULL || kr_cuda_sync() == 0 || kr_cuda_driver_version() != -1)
		printf("FAIL nodrv: memory helpers\n"), fails++;
	kr_cuda_close(NULL);
	printf("nodrv: %s (%s)\n", fails ? "FAIL" : "ok", why);
	printf("%d passed, %d failed, 0 skipped\n", fails ? 0 : 1, fails ? 1 : 0);
	return fails != 0;
}
