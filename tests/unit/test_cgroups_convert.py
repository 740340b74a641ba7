"""Kubelet/runc CPU arithmetic; expected values worked out from the Go sources by hand."""

from __future__ import annotations

import pytest

from minipod.cgroups import convert


@pytest.mark.parametrize(
    "milli, shares",
    [
        (None, 2),  # no request: BestEffort gets the minimum, not the kernel's 1024
        (0, 2),
        (1, 2),  # 1*1024/1000 = 1 -> clamped up to MinShares
        (2, 2),  # 2048/1000 = 2
        (3, 3),  # 3072/1000 = 3 (integer division)
        (100, 102),  # 102400/1000 = 102.4 -> 102
        (250, 256),
        (500, 512),
        (1000, 1024),
        (1500, 1536),
        (256000, 262144),  # exactly MaxShares
        (300000, 262144),  # clamped to MaxShares
    ],
)
def test_cpu_shares(milli, shares):
    assert convert.cpu_shares(milli) == shares


@pytest.mark.parametrize(
    "milli, period, quota",
    [
        (None, 100000, None),  # no limit: no quota (the kubelet's 0 = unset)
        (0, 100000, None),
        (1, 100000, 1000),  # 100 µs -> raised to the 1 ms minimum
        (9, 100000, 1000),
        (10, 100000, 1000),  # MinMilliCPULimit: exactly the minimum
        (11, 100000, 1100),
        (250, 100000, 25000),
        (500, 100000, 50000),
        (1000, 100000, 100000),
        (2500, 100000, 250000),  # more than one CPU: quota > period
        (500, 50000, 25000),  # custom period (CPUCFSQuotaPeriod)
        (15, 50000, 1000),  # 750 -> minimum
    ],
)
def test_cpu_quota(milli, period, quota):
    assert convert.cpu_quota(milli, period) == quota


def test_negative_milli_is_rejected():
    with pytest.raises(ValueError):
        convert.cpu_shares(-1)
    with pytest.raises(ValueError):
        convert.cpu_quota(-5)


@pytest.mark.parametrize(
    "shares, weight",
    [
        (None, 0),  # 0 = unset: leave cpu.weight alone
        (0, 0),
        (1, 1),  # below range: clamped (runc's uint64 would wrap around here)
        (2, 1),
        (3, 1),  # 1 + 9999//262142
        (512, 20),  # 1 + 510*9999//262142 = 1 + 19
        (1024, 39),  # the default shares land at 39, not 100 (kubernetes#131216)
        (2048, 79),
        (262143, 9999),
        (262144, 10000),
        (10**6, 10000),
    ],
)
def test_cpu_weight_linear(shares, weight):
    assert convert.cpu_weight(shares) == weight


@pytest.mark.parametrize(
    "shares, weight",
    # The table of opencontainers/cgroups' own test, plus two points in between.
    [(0, 0), (1, 1), (2, 1), (3, 2), (1024, 100), (262143, 10000), (262144, 10000),
     (262145, 10000), (512, 59), (2048, 174)],
)
def test_cpu_weight_log(shares, weight):
    assert convert.cpu_weight_log(shares) == weight


@pytest.mark.parametrize(
    "quota, period, line",
    [
        (None, 100000, "max 100000"),
        (-1, 100000, "max 100000"),  # v1's "no quota" spelling
        (50000, 100000, "50000 100000"),
        (1000, 100000, "1000 100000"),
        (250000, 100000, "250000 100000"),
        (25000, 50000, "25000 50000"),
    ],
)
def test_cpu_max(quota, period, line):
    assert convert.cpu_max(quota, period) == line


def test_pipeline_500m():
    """A 500m request and limit end up as the v2 files a kubelet-managed pod would show."""
    shares = convert.cpu_shares(500)
    assert convert.cpu_weight(shares) == 20
    assert convert.cpu_max(convert.cpu_quota(500)) == "50000 100000"
