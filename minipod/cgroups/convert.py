"""Kubelet's CPU arithmetic, pure: milli-CPU -> v1 shares/quota -> v2 weight/cpu.max.

Sources (read, not copied):
  kubernetes pkg/kubelet/cm/helpers_linux.go    MilliCPUToShares, MilliCPUToQuota
  runc libcontainer/cgroups/utils.go (<= 1.2)   ConvertCPUSharesToCgroupV2Value, linear
  opencontainers/cgroups utils.go (runc >= 1.3) the same function, log-quadratic since
                                                kubernetes issue #131216 (runc PR #4785)
"""

from __future__ import annotations

import math

MIN_SHARES = 2  # kernel MIN_SHARES
MAX_SHARES = 262144  # kernel MAX_SHARES (1 << 18)
SHARES_PER_CPU = 1024
MILLI_PER_CPU = 1000
QUOTA_PERIOD = 100_000  # µs; the kubelet's default CFS period
MIN_QUOTA = 1000  # µs; the kernel rejects a smaller cfs quota
MIN_WEIGHT = 1
MAX_WEIGHT = 10000


def cpu_shares(milli: int | None) -> int:
    """MilliCPUToShares: milli*1024/1000 (integer), clamped to [2, 262144].

    A request of 0 (or none) gives 2, not the kernel default 1024: the kubelet wants a
    BestEffort group to get the least CPU under contention.
    """
    if not milli:
        return MIN_SHARES
    if milli < 0:
        raise ValueError(f"cpu milli-value must not be negative: {milli}")
    shares = milli * SHARES_PER_CPU // MILLI_PER_CPU
    return max(MIN_SHARES, min(shares, MAX_SHARES))


def cpu_quota(milli: int | None, period: int = QUOTA_PERIOD) -> int | None:
    """MilliCPUToQuota: milli*period/1000 µs, at least 1000 µs. None = no quota.

    The kubelet returns 0 for a limit of 0, which CRI/runc treat as "unset"; here that is None.
    """
    if not milli:
        return None
    if milli < 0:
        raise ValueError(f"cpu milli-value must not be negative: {milli}")
    return max(milli * period // MILLI_PER_CPU, MIN_QUOTA)


def cpu_weight(shares: int | None) -> int:
    """v1 shares -> v2 cpu.weight with runc's linear map [2, 262144] -> [1, 10000].

    0/None -> 0, meaning "unset" (leave cpu.weight alone). Unlike runc we clamp the input
    first (runc's unsigned arithmetic wraps around for shares < 2); the v1 kernel clamps too.
    Note: this maps the default 1024 shares to weight 39, not 100; see cpu_weight_log.
    """
    if not shares:
        return 0
    shares = max(MIN_SHARES, min(shares, MAX_SHARES))
    return 1 + (shares - MIN_SHARES) * (MAX_WEIGHT - 1) // (MAX_SHARES - MIN_SHARES)


def cpu_weight_log(shares: int | None) -> int:
    """The newer map (opencontainers/cgroups, runc >= 1.3): a quadratic in log2(shares)
    through (2, 1), (1024, 100) and (262144, 10000), so default shares give default weight.
    0/None -> 0 (unset)."""
    if not shares:
        return 0
    if shares <= MIN_SHARES:
        return MIN_WEIGHT
    if shares >= MAX_SHARES:
        return MAX_WEIGHT
    log = math.log2(shares)
    exponent = (log * log + 125 * log) / 612.0 - 7.0 / 34.0
    return math.ceil(10**exponent)


def cpu_max(quota: int | None, period: int = QUOTA_PERIOD) -> str:
    """The v2 cpu.max line: '50000 100000', or 'max 100000' without a quota."""
    return f"{'max' if quota is None or quota < 0 else quota} {period}"
