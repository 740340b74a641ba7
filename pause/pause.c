/*
 * pause: the process that holds a pod's namespaces.
 *
 * It does nothing but wait, so the pod's net/ipc/uts namespaces (and, with
 * shareProcessNamespace, its PID namespace) live exactly as long as it does.
 * Behaviour follows Kubernetes' build/pause/linux/pause.c:
 *
 *   -v anywhere in argv   print "pause.c <version>", exit 0
 *   not PID 1             warn on stderr and keep running (not an error)
 *   SIGINT / SIGTERM      exit 0
 *   SIGCHLD               reap every exited child (we may be a PID namespace's
 *                         init, and orphans are re-parented to us)
 *   sigaction fails       exit 1 (SIGINT), 2 (SIGTERM), 3 (SIGCHLD)
 *   pause() loop ends     exit 42 (it cannot)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#define STR(x) #x
#define XSTR(x) STR(x)
#ifndef VERSION
#define VERSION HEAD
#endif

/* Only async-signal-safe calls in handlers: write() and _exit(), not
 * psignal()/exit(), which take stdio locks and run atexit handlers. */
static void on_shutdown(int sig) {
	static const char term[] = "pause: shutting down on SIGTERM\n";
	static const char intr[] = "pause: shutting down on SIGINT\n";

	if (sig == SIGTERM)
		(void)!write(STDERR_FILENO, term, sizeof(term) - 1);
	else
		(void)!write(STDERR_FILENO, intr, sizeof(intr) - 1);
	_exit(0);
}

static void on_child(int sig) {
	int saved = errno; /* waitpid may clobber it under the interrupted code */

	(void)sig;
	/* One SIGCHLD can stand for many exits (signals do not queue), so reap
	 * until nothing is left. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static int handle(int sig, void (*fn)(int), int flags) {
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		if (strcasecmp(argv[i], "-v") == 0) {
			printf("pause.c %s\n", XSTR(VERSION));
			return 0;
		}
	}

	if (getpid() != 1)
		/* pause is also used outside pods (and minipod runs it as PID 1
		 * only with shareProcessNamespace), so this is only a warning. */
		fprintf(stderr, "Warning: pause should be the first process\n");

	if (handle(SIGINT, on_shutdown, 0) < 0)
		return 1;
	if (handle(SIGTERM, on_shutdown, 0) < 0)
		return 2;
	/* SA_NOCLDSTOP: a child being stopped or continued is no reason to wake. */
	if (handle(SIGCHLD, on_child, SA_NOCLDSTOP) < 0)
		return 3;

	for (;;)
		pause();
	fprintf(stderr, "Error: infinite loop terminated\n");
	return 42;
}
