"""iptables through its own binaries: list a table, apply a transaction, build the lines that
make a chain minipod owns hold exactly its rules, or vanish.

The NAT (nat.py) and the host ports (hostport.py) each own chains and a few jumps into the
built-in hooks; both read `iptables -S` once per table, compare, and send one
`iptables-restore --noflush` script, so a chain is never seen half-filled by packets: declaring
it there (`:CHAIN - [0:0]`) flushes and refills it in one transaction. We use the iptables
binary (iptables-nft on Debian 12), not nftables directly, so the rules sit beside Docker's,
kube-proxy's and firewalld's and show in `iptables-save`, where users look.
"""

from __future__ import annotations

import shlex
import subprocess

from minipod.net import NetError


class IptablesError(NetError):
    """An iptables command failed or is not installed."""


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise _missing(argv[0]) from None


def _missing(binary: str) -> IptablesError:
    return IptablesError(f"{binary} not found: install the iptables package")


def rules_of(tables: list[str]) -> dict[str, list[list[str]]]:
    """`iptables -t TABLE -S` of each table, each line split into arguments (quotes undone).
    The processes run side by side: each is mostly its own start-up (~3 ms)."""
    argv = ["iptables", "-w", "-S", "-t"]
    try:
        procs = {t: subprocess.Popen(argv + [t], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for t in tables}
    except FileNotFoundError:  # at the first: none was started
        raise _missing(argv[0]) from None
    done = {t: (p.communicate(), p.returncode) for t, p in procs.items()}  # all reaped
    out = {}
    for t, ((stdout, stderr), code) in done.items():
        if code != 0:
            raise IptablesError(f"iptables -t {t} -S: {stderr.strip() or f'exit {code}'}")
        out[t] = [shlex.split(ln) for ln in stdout.splitlines() if ln.strip()]
    return out


def restore(script: list[str]) -> None:
    """One `iptables-restore --noflush` transaction: `*table`, lines, `COMMIT` sections."""
    text = "\n".join(script) + "\n"
    r = _run(["iptables-restore", "-w", "--noflush"], stdin=text)
    if r.returncode != 0:
        raise IptablesError(
            f"iptables-restore: {r.stderr.strip() or f'exit {r.returncode}'}\ninput was:\n{text}")


def _quote(arg: str) -> str:
    # iptables-restore splits on blanks and understands only double quotes (not shlex's '').
    if arg and all(c.isalnum() or c in "-_.:/,!+=@%" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(args: list[str]) -> str:
    return " ".join(_quote(a) for a in args)


def jumps(listed: list[list[str]], hook: str, chain: str) -> list[list[str]]:
    """The rules of `hook` that jump to `chain`, whatever else they match on: a differently
    printed but equivalent jump counts, so we never add a second one."""
    return [
        r for r in listed
        if r[:2] == ["-A", hook] and "-j" in r and r[r.index("-j") + 1:][:1] == [chain]
    ]


def fill(listed: list[list[str]], chain: str, body: list[list[str]]) -> list[str]:
    """Lines that make `chain` exist holding exactly `body`; none when it already does."""
    want = [["-N", chain]] + [["-A", chain, *r] for r in body]
    have = [r for r in listed if len(r) >= 2 and r[0] in ("-N", "-A") and r[1] == chain]
    if have == want:
        return []
    return [f":{chain} - [0:0]"] + [line(["-A", chain, *r]) for r in body]


def hook_in(listed: list[list[str]], hook: str, chain: str, match: list[str],
            insert: bool) -> list[str]:
    """The line adding the jump from `hook` to `chain` (first with `insert`), unless one is
    there."""
    if jumps(listed, hook, chain):
        return []
    where = ["-I", hook, "1"] if insert else ["-A", hook]
    return [line([*where, *match, "-j", chain])]


def drop(listed: list[list[str]], chain: str, hooks: list[str]) -> list[str]:
    """Lines removing every jump from `hooks` into `chain`, then the chain. Gone = none."""
    out = [line(["-D", *r[1:]]) for hook in hooks for r in jumps(listed, hook, chain)]
    if ["-N", chain] in listed:
        out += [line(["-F", chain]), line(["-X", chain])]
    return out
