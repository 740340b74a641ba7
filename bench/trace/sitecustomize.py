"""Timestamps inside minipod, without touching minipod: loaded by every Python process the
benchmark starts (PYTHONPATH=bench/trace), active only when MINIPOD_BENCH_TRACE names a file.

It writes one line per event, `<CLOCK_MONOTONIC ns> <pid> <B|E|I> <label>`, to that file
(O_APPEND: lines from the CLI, the supervisor, the janitor, the network agent and forked
children interleave whole). Sources:
  - begin/end of selected minipod functions, wrapped right after their module executes
    (a meta-path finder); the supervisor runs as __main__ (`-m minipod.kubelet.supervisor`), so its
    class is wrapped at the first audit event after its module body ran (the janitor fork);
  - module execution time of the heavy imports (pydantic, yaml, pyroute2, minipod.spec.spec);
  - audit events: process start (this file runs after interpreter init), fork, exec, and
    subprocess.Popen (iptables).
Used only for the attribution passes of bench/pods.py; the timed iterations run without it.
"""

from __future__ import annotations

import os
import sys
import time

_PATH = os.environ.get("MINIPOD_BENCH_TRACE")

# module -> names to wrap ("Class.method" or "function")
TARGETS = {
    "minipod.agent.client": ["call", "connect"],  # in the client: before the agent has it
    "minipod.agent.zygote": ["Daemon.__init__"],
    "minipod.state": ["write_json"],
    "minipod.cli.cli": ["main"],
    "minipod.config": ["load"],
    "minipod.cli.runner": ["run", "load_plans", "launch", "stop", "remove", "wait_gone",
                       "_exec_supervisor", "_claim", "Daemon.__init__", "Daemon.hand",
                       "Daemon.cancel"],
    "minipod.kubelet.supervisor": ["Host.__init__", "Supervisor.__init__", "Supervisor.run",
                           "Supervisor.loop", "Supervisor.finish", "Supervisor.request_stop",
                           "Supervisor._reap", "Supervisor.write_state", "Supervisor._start",
                           "Supervisor.begin_termination"],
    "minipod.images.pull": ["ensure"],
    "minipod.spec.spec": ["load"],
    "minipod.pod.plan": ["build"],
    "minipod.images.store": ["ImageStore.__init__"],
    "minipod.kubelet.janitor": ["watch", "cleanup"],
    "minipod.net.agent": ["start", "Agent.setup_pod", "Agent.teardown_pod", "Agent.close",
                          "_child", "_op_setup_pod", "_op_lease_pod", "_op_attach_pod",
                          "_op_teardown_pod"],
    "minipod.net": ["setup_pod", "lease_pod", "attach_pod", "teardown_pod", "remove_network",
                    "_remove_veth", "_release"],
    "minipod.net.ipam": ["allocate", "release"],
    "minipod.net.links": ["check_subnet", "ensure_bridge", "attach_veth", "delete_link"],
    "minipod.net.nat": ["ensure", "remove", "enable_forwarding", "restore_forwarding"],
    "minipod.pod.pod": ["Pod.setup", "Pod._make_dirs", "Pod._make_cgroups", "Pod.prepare",
                    "Pod._begin_sandbox", "Pod._finish_sandbox", "Pod.fork_container",
                    "Pod.write_etc_files", "Pod.teardown", "Pod.kill_all", "Pod._net_teardown",
                    "Pod.remove_cgroups", "Pod.remove_dirs"],
    "minipod.pod.sandbox": ["start", "begin", "Starting.finish"],
    "minipod.pod.container": ["Pending.release", "Pending.wait"],
    "minipod.cli.status": ["inspect", "ps"],
    "minipod.cgroups": ["detect"],
    "minipod.cgroups.v1": ["V1Driver.join", "V1Driver.create", "V1Driver.remove",
                           "V1Driver.kill"],
    "minipod.cgroups.v2": ["V2Driver.join", "V2Driver.create", "V2Driver.remove",
                           "V2Driver.kill"],
    "minipod.cgroups.fs": ["rmdir_retry"],
}
MAIN_TARGETS = {  # wrapped in __main__ when __main__ is minipod/kubelet/supervisor.py
    "supervisor.py": ["Supervisor.__init__", "Supervisor.run", "Supervisor.loop",
                      "Supervisor.finish", "Supervisor.request_stop", "Supervisor._reap",
                      "Supervisor.write_state"],
}
IMPORTS = {"pydantic", "yaml", "pyroute2", "minipod.spec.spec", "minipod.pod.plan", "minipod.cgroups",
           "minipod.pod.pod", "prctl", "cgroupspy", "minipod.kubelet.supervisor"}

_fd = -1
_ident: tuple[int, int] | None = None


def _write(kind: str, label: str) -> None:
    global _fd, _ident
    line = f"{time.monotonic_ns()} {os.getpid()} {kind} {label}\n".encode()
    for _ in range(2):
        try:
            if _fd < 0:
                _fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                st = os.fstat(_fd)
                _ident = (st.st_dev, st.st_ino)
            else:
                # minipod closes inherited fds in its children; the number may now be another
                # file's: check before writing, reopen if it is not ours any more.
                st = os.fstat(_fd)
                if (st.st_dev, st.st_ino) != _ident:
                    _fd = -1
                    continue
            os.write(_fd, line)
            return
        except OSError:
            _fd = -1  # closed under us, or the path is gone (after pivot_root): try once more
    return


def _wrap(owner, attr: str, label: str) -> None:
    fn = getattr(owner, attr, None)
    if fn is None or getattr(fn, "_bench_wrapped", False):
        return

    def wrapper(*a, **kw):
        _write("B", label)
        try:
            return fn(*a, **kw)
        finally:
            _write("E", label)

    wrapper._bench_wrapped = True
    wrapper.__name__ = getattr(fn, "__name__", attr)
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    wrapper.__wrapped__ = fn
    setattr(owner, attr, wrapper)


def _patch(module, names: list[str], prefix: str) -> None:
    for name in names:
        owner = module
        parts = name.split(".")
        for p in parts[:-1]:
            owner = getattr(owner, p, None)
            if owner is None:
                break
        if owner is not None:
            _wrap(owner, parts[-1], f"{prefix}.{name}")


class _Finder:
    """Wraps the loader of TARGETS/IMPORTS modules: time the module body, then patch it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in TARGETS and fullname not in IMPORTS:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        orig = loader.exec_module

        def exec_module(module):
            if fullname in IMPORTS:
                _write("B", f"import:{fullname}")
            try:
                orig(module)
            finally:
                if fullname in IMPORTS:
                    _write("E", f"import:{fullname}")
            if fullname in TARGETS:
                _patch(module, TARGETS[fullname], fullname.removeprefix("minipod."))

        loader.exec_module = exec_module
        return spec


_main_patched = False


def _audit(event: str, args) -> None:
    global _main_patched
    if event == "os.fork":
        _write("I", "fork")
    elif event == "os.exec":
        _write("I", f"exec:{os.path.basename(str(args[0]))}")
    elif event == "subprocess.Popen":
        argv = args[1] if len(args) > 1 else None
        what = os.path.basename(str(argv[0] if isinstance(argv, (list, tuple)) else argv))
        _write("I", f"popen:{what}")
    if not _main_patched and event in ("os.fork", "open"):
        main = sys.modules.get("__main__")
        f = getattr(main, "__file__", "") or ""
        for suffix, names in MAIN_TARGETS.items():
            if f.endswith("minipod/" + suffix) and hasattr(main, names[0].split(".")[0]):
                _main_patched = True
                _patch(main, names, suffix.removesuffix(".py"))


if _PATH:
    argv = getattr(sys, "orig_argv", sys.argv)
    what = "supervisor" if "minipod.kubelet.supervisor" in argv else "daemon" if (
        "minipod.kubelet.daemon" in argv) else " ".join(
        a for a in argv[1:4] if not a.startswith("/")) or "python"
    _write("I", f"start:{what.replace(' ', '_')}")
    sys.meta_path.insert(0, _Finder())
    sys.addaudithook(_audit)
