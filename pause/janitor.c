/*
 * janitor: a pod's last line of defence, a static program of ~0.7 MB RSS instead of
 * a ~10 MB Python interpreter sleeping beside every pod.
 *
 *   janitor -- PYTHON -m minipod.kubelet.daemon ARGS...
 *
 * It becomes a child subreaper, starts the supervisor (the command after "--",
 * given one more argument, "--janitor-fd N"), and waits. The supervisor writes
 * to fd N, one line each:
 *
 *   RUN_DIR     once it has a pod (EOF before that: no pod, nothing to clean)
 *   done        when it has torn the pod down and recorded its end
 *
 * If the supervisor exits without "done" (killed, crashed), the janitor execs
 *   PYTHON -P -m minipod.kubelet.janitor RUN_DIR WHY
 * which tears the pod down from its plan on disk, as the Python janitor would.
 * Otherwise it exits with the supervisor's exit code.
 *
 * Once it knows the pod it rewrites its argv and comm, so that `ps` shows
 *   minipod-janitor -pod NAME -root ROOT   (comm mp-jan:NAME)
 * as containerd-shim shows -id (minipod/kubelet/titles.py has the same format).
 *
 * While it waits it reaps every orphan re-parented to it: on hosts whose PID 1
 * reaps late, a zombie left in a pod's cgroup would keep the cgroup busy.
 * SIGINT and SIGHUP are ignored (Ctrl-C reaches the supervisor in the same
 * process group; it decides); SIGTERM is passed on to the supervisor.
 *
 *   janitor --adopt PID FD PYTHON [ROOM]
 *
 * The node agent's form (minipod/agent/zygote.py): the supervisor PID is already our
 * child -- forked from the agent's warm interpreter by the process that then exec'd us,
 * so it is ours across the exec -- and FD is the read end of its pipe. PYTHON runs the
 * clean-up. ROOM, spaces, only makes argv long enough for the title.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define MSG_MAX 4096

static volatile pid_t supervisor;

static void forward_term(int sig) {
	(void)sig;
	if (supervisor > 0)
		kill(supervisor, SIGTERM);
}

static void die(const char *what) {
	fprintf(stderr, "minipod janitor: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Rewrite our command line in place (it cannot grow: cut to the original argv's length,
 * the rest zeroed so that /proc/PID/cmdline ends there) and our comm. The strings argv
 * points at are overwritten: whoever needs one later must have copied it. */
static void set_title(int argc, char **argv, const char *run_dir) {
	char title[2 * MSG_MAX + 32], comm[16] = "mp-jan:", root[MSG_MAX], *slash;
	const char *name;
	char *end = argv[argc - 1] + strlen(argv[argc - 1]);
	size_t room = (size_t)(end - argv[0]);

	snprintf(root, sizeof(root), "%s", run_dir);
	while ((slash = strrchr(root, '/')) && slash[1] == '\0' && slash != root)
		*slash = '\0';
	slash = strrchr(root, '/');
	name = slash ? slash + 1 : root;
	if (slash)
		*slash = '\0'; /* ROOT/pods */
	slash = strrchr(root, '/');
	if (slash)
		*slash = '\0'; /* ROOT */
	snprintf(title, sizeof(title), "minipod-janitor -pod %s -root %s", name, root);
	memset(argv[0], 0, room);
	memcpy(argv[0], title, strlen(title) < room ? strlen(title) : room - 1);
	strncat(comm, name, sizeof(comm) - 1 - strlen(comm));
	prctl(PR_SET_NAME, comm, 0, 0, 0);
}

/* Append what can be read from fd to buf; 0 at EOF (or when full), 1 otherwise. */
static int read_some(int fd, char *buf, size_t *len) {
	ssize_t n;

	if (*len >= MSG_MAX - 1)
		return 0;
	do
		n = read(fd, buf + *len, MSG_MAX - 1 - *len);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;
	*len += (size_t)n;
	buf[*len] = '\0';
	return 1;
}

/* SIGINT and SIGHUP ignored, SIGTERM passed on to the supervisor (see the top). */
static void take_signals(void) {
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = forward_term;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
}

int main(int argc, char **argv) {
	char msg[MSG_MAX] = "", fdarg[16], why[64];
	size_t len = 0;
	int pipefd[2], status = 0, code;
	char **cmd, *nl;
	sigset_t term, mask;
	pid_t pid;

	/* In /, not in the directory `minipod run` was typed in: the pod's processes would keep
	 * it busy (nothing mounted there could be unmounted). The paths we are given are
	 * absolute (minipod/config.py: export, PATHS). */
	if (chdir("/") != 0)
		die("chdir /");
	if (argc >= 5 && strcmp(argv[1], "--adopt") == 0) {
		if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
			die("PR_SET_CHILD_SUBREAPER");
		supervisor = (pid_t)atoi(argv[2]);  /* before SIGTERM has someone to go to */
		pipefd[0] = atoi(argv[3]);
		fcntl(pipefd[0], F_SETFD, FD_CLOEXEC);
		take_signals();
		if (!(cmd = calloc(2, sizeof(*cmd))))
			die("calloc");
		cmd[0] = argv[4];
		goto wait_for_pod;
	}
	if (argc < 3 || strcmp(argv[1], "--") != 0) {
		fprintf(stderr, "usage: janitor -- PYTHON -m minipod.kubelet.daemon ARGS...\n"
				"       janitor --adopt PID FD PYTHON [ROOM]\n");
		return 2;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
		die("PR_SET_CHILD_SUBREAPER");
	/* The read end stays ours (close-on-exec); the write end is the supervisor's. */
	if (pipe2(pipefd, O_CLOEXEC) != 0 || fcntl(pipefd[1], F_SETFD, 0) != 0)
		die("pipe");

	/* argv after "--" (argc-2 entries), "--janitor-fd N" and NULL: argc+1 entries. */
	cmd = calloc((size_t)argc + 1, sizeof(*cmd));
	if (!cmd)
		die("calloc");
	memcpy(cmd, argv + 2, (size_t)(argc - 2) * sizeof(*cmd));
	snprintf(fdarg, sizeof(fdarg), "%d", pipefd[1]);
	cmd[argc - 2] = "--janitor-fd";
	cmd[argc - 1] = fdarg;

	/* Signals first: a SIGTERM that arrives right after fork must not kill us. */
	take_signals();

	/* SIGTERM stays blocked until `supervisor` is set: one that came in between would find
	 * no one to pass it on to, and be lost. */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, &mask);
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		/* The supervisor takes its own signal dispositions. */
		signal(SIGINT, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		sigprocmask(SIG_SETMASK, &mask, NULL);
		execv(cmd[0], cmd);
		fprintf(stderr, "minipod janitor: exec %s: %s\n", cmd[0], strerror(errno));
		_exit(127);
	}
	supervisor = pid;
	sigprocmask(SIG_SETMASK, &mask, NULL);
	close(pipefd[1]);

wait_for_pod:
	/* The run directory comes first; EOF before a whole line means no pod. Blocking
	 * here is fine: nothing can be orphaned to us before the supervisor has a pod. */
	while (!strchr(msg, '\n') && read_some(pipefd[0], msg, &len))
		;
	if ((nl = strchr(msg, '\n'))) {
		char dir[MSG_MAX];

		/* The clean-up below execs cmd[0], a string in the argv we are about to rewrite. */
		if (!(cmd[0] = strdup(cmd[0])))
			die("strdup");
		memcpy(dir, msg, (size_t)(nl - msg));
		dir[nl - msg] = '\0';
		set_title(argc, argv, dir);
	}

	for (;;) {
		pid_t got = waitpid(-1, &status, 0);

		if (got == supervisor)
			break;
		if (got < 0 && errno == ECHILD)
			break; /* cannot happen while the supervisor lives */
	}
	/* "done" was written before the supervisor exited; other holders of the pipe (its
	 * forked helpers) may keep it open, so read what is there without waiting. */
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	while (read_some(pipefd[0], msg, &len))
		;

	nl = strchr(msg, '\n');
	if (!nl) {
		/* No pod was handed over: nothing was created. But a supervisor that died this
		 * early may leave its helper (the network agent, which exits at the EOF of its
		 * socket) to us: wait for it, or it would outlive us, an orphan of init's. */
		while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
			;
		return 0;
	}
	*nl = '\0';
	if (strstr(nl + 1, "done\n") && WIFEXITED(status))
		return WEXITSTATUS(status);
	code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
	snprintf(why, sizeof(why), "the supervisor died unexpectedly (exit %d)", code);
	{
		/* -P: not the working directory first on sys.path (minipod.python_m says why) */
		char *cleanup[] = {cmd[0], "-P", "-m", "minipod.kubelet.janitor", msg, why, NULL};

		execv(cmd[0], cleanup);
	}
	die("exec the clean-up");
	return 1;
}
