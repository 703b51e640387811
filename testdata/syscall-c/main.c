// syscall-c: a workload that spends its time in the kernel.
//
// main -> do_writes -> write(2) on /dev/null and do_getppid -> getppid(2) in a
// tight loop, so most samples carry kernel frames (the syscall path) above
// the user frames do_writes/do_getppid -> main.
//
// Usage: syscall-c [seconds]   (default: run until killed)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static char buf[4096];

__attribute__((noinline)) void do_writes(int fd)
{
	for (int i = 0; i < 1000; i++)
		if (write(fd, buf, sizeof(buf)) < 0)
			exit(1);
}

__attribute__((noinline)) void do_getppid(void)
{
	for (int i = 0; i < 1000; i++)
		syscall(SYS_getppid);
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 0;
	int fd = open("/dev/null", O_WRONLY);
	if (fd < 0)
		return 1;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		do_writes(fd);
		do_getppid();
		if (seconds > 0) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 >= seconds)
				return 0;
		}
	}
}
