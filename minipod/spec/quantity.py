"""Kubernetes resource quantities: `128Mi`, `1G`, `500m`, `0.5`, `1e3`.

The grammar is apimachinery's pkg/api/resource (quantity.go):
    <quantity> ::= <sign><digits>[.<digits>]<suffix>
    <suffix>   ::= Ki | Mi | Gi | Ti | Pi | Ei      (powers of 1024)
                 | n | u | m | "" | k | M | G | T | P | E   (powers of 1000)
                 | e<signed int> | E<signed int>    (decimal exponent)
Values are exact (Decimal); conversions to whole bytes or millicores round up, as the kubelet does
(`Quantity.Value()` and `MilliValue()` round towards +infinity). No pydantic here: the plan and
cgroup code use this module directly.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from functools import total_ordering

from minipod.spec.show import show

_MULTIPLIERS: dict[str, Decimal] = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30),
    "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18),
}
# A number (at least one digit; "5.", ".5" are accepted like apimachinery) then the suffix.
# [0-9], not \d: \d also matches other scripts' digits ('١٢٣'), which Decimal() would accept.
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(.*)", re.DOTALL)
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]{1,4})")
# The kubelet reads quantities as int64 (Quantity.Value(), MilliValue()); anything larger is
# refused here rather than saturated silently (and 1e9999 bytes is no limit anyone means).
MAX = Decimal(2**63 - 1)
# Plenty of digits: 1Ei is 19 digits and a quantity may carry nano precision on top of that.
_CONTEXT = decimal.Context(prec=60)


def _value_of(text: str) -> Decimal:
    m = _QUANTITY.fullmatch(text)
    if not m:
        raise ValueError
    number, suffix = Decimal(m.group(1)), m.group(2)
    if suffix in _MULTIPLIERS:
        return _CONTEXT.multiply(number, _MULTIPLIERS[suffix])
    exp = _EXPONENT.fullmatch(suffix)  # "E" alone is exa (above); "E3" is 10^3
    if not exp:
        raise ValueError
    return number.scaleb(int(exp.group(1)), _CONTEXT)


@total_ordering
class Quantity:
    """An immutable quantity, compared by value (`1Gi == 1024Mi`); str() gives the text back."""

    __slots__ = ("_text", "_value")
    _text: str
    _value: Decimal

    def __init__(self, text: str | int | float) -> None:
        # YAML gives `cpu: 1` and `cpu: 0.5` as numbers; bools are a mistake (`memory: yes`).
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise ValueError(f"{show(text)} is not a quantity (e.g. 128Mi, 1G)")
        if isinstance(text, int) and not -MAX <= text <= MAX:
            raise ValueError(f"{show(text)} is too large for a quantity (at most 2^63-1)")
        s = text.strip() if isinstance(text, str) else repr(text)
        try:
            value = _value_of(s)
        except (ValueError, decimal.DecimalException):
            raise ValueError(f"{show(text)} is not a quantity (e.g. 128Mi, 1G)") from None
        if not value.is_finite() or abs(value) > MAX:
            raise ValueError(f"{show(text)} is too large for a quantity (at most 2^63-1)")
        object.__setattr__(self, "_text", s)
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Quantity is immutable")

    def __reduce__(self):  # copy/deepcopy/pickle rebuild from the text (no __setattr__)
        return (Quantity, (self._text,))

    @property
    def value(self) -> Decimal:
        return self._value

    def to_bytes(self) -> int:
        """Whole units, rounded up: memory `500m` (half a byte) is 1."""
        return int(self._value.to_integral_value(rounding=decimal.ROUND_CEILING))

    def to_milli(self) -> int:
        """Thousandths, rounded up: cpu `0.5` and `500m` are both 500."""
        return int((self._value * 1000).to_integral_value(rounding=decimal.ROUND_CEILING))

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Quantity({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self._value == other._value

    def __lt__(self, other: Quantity) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self._value < other._value

    def __hash__(self) -> int:
        return hash(self._value)


def parse(s: str | int | float) -> Quantity:
    """Parse a quantity; ValueError("'12Q' is not a quantity (e.g. 128Mi, 1G)") if it is not one."""
    return Quantity(s)
