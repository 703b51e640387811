// churn: a stream of short-lived processes, as on a host running builds,
// cron jobs and CI: RATE new processes per second for SECONDS, each
// running PROG ARGS... (fork and exec), reaped as they exit. Prints the
// number started.
//
// Usage: churn RATE SECONDS PROG [ARGS...]
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: churn RATE SECONDS PROG [ARGS...]\n");
		return 2;
	}
	double rate = atof(argv[1]), secs = atof(argv[2]);
	if (rate <= 0 || secs <= 0) {
		fprintf(stderr, "churn: RATE and SECONDS must be positive\n");
		return 2;
	}
	double t0 = now(), next = t0;
	long started = 0;
	while (now() - t0 < secs) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("churn: fork");
			return 1;
		}
		if (pid == 0) {
			execv(argv[3], argv + 3);
			_exit(127);
		}
		started++;
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		next += 1 / rate;
		double d = next - now();
		if (d > 0) {
			struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
			nanosleep(&ts, NULL);
		}
	}
	while (wait(NULL) > 0 || errno == EINTR)
		;
	printf("%ld\n", started);
	return 0;
}
