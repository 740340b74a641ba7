from decimal import Decimal

import pytest

from minipod.spec.quantity import Quantity, parse


@pytest.mark.parametrize("text, value", [
    ("128Mi", 134217728),
    ("128M", 128000000),
    ("1Ki", 1024), ("1Gi", 2**30), ("1Ti", 2**40), ("1Pi", 2**50), ("1Ei", 2**60),
    ("1k", 1000), ("1G", 10**9), ("1T", 10**12), ("1P", 10**15), ("1E", 10**18),
    ("1e3", 1000), ("1E3", 1000), ("2e-3", Decimal("0.002")), ("1e+2", 100),
    ("500m", Decimal("0.5")), ("100n", Decimal("1e-7")), ("5u", Decimal("5e-6")),
    ("0.5", Decimal("0.5")), (".5", Decimal("0.5")), ("1.5Gi", 1610612736),
    ("1000", 1000), ("0", 0), ("+1k", 1000), ("-1", -1),
])
def test_parse_values(text, value):
    assert parse(text).value == Decimal(value)


def test_cpu_forms_are_equal_in_millicores():
    assert parse("0.5").to_milli() == parse("500m").to_milli() == 500
    assert parse(1).to_milli() == 1000
    assert parse("2").to_milli() == 2000
    assert parse("100n").to_milli() == 1  # rounded up, like MilliValue()


def test_to_bytes_rounds_up():
    assert parse("500m").to_bytes() == 1  # memory "500m" is half a byte
    assert parse("128Mi").to_bytes() == 134217728
    assert parse("1.5").to_bytes() == 2
    assert parse("1e3").to_bytes() == 1000


def test_yaml_numbers_are_accepted():
    assert parse(1).value == 1
    assert parse(1000).to_bytes() == 1000
    assert parse(0.5).to_milli() == 500
    assert str(parse(1)) == "1"


@pytest.mark.parametrize("bad", ["12Q", "", "Mi", "e3", "1e", "1 Gi", "1ki", "1mi", "1.2.3", "0x10",
                                 "1Gi ", None, True, [1]])
def test_rejects_non_quantities(bad):
    if bad == "1Gi ":  # surrounding whitespace is trimmed, as the API server's decoder does
        assert parse(bad).to_bytes() == 2**30
        return
    with pytest.raises(ValueError, match="is not a quantity"):
        parse(bad)


def test_error_message():
    with pytest.raises(ValueError) as e:
        parse("12Q")
    assert str(e.value) == "'12Q' is not a quantity (e.g. 128Mi, 1G)"


def test_keeps_text_and_compares_by_value():
    q = parse("1Gi")
    assert str(q) == "1Gi"
    assert repr(q) == "Quantity('1Gi')"
    assert q == parse("1024Mi")
    assert hash(q) == hash(parse("1024Mi"))
    assert parse("100Mi") < parse("1Gi") <= parse("1024Mi")
    assert parse("1") > parse("999m")
    assert q != "1Gi"


def test_is_immutable():
    q = Quantity("1Gi")
    with pytest.raises(AttributeError):
        q._value = Decimal(1)  # type: ignore[misc]
    import copy
    assert copy.deepcopy(q) == q and str(copy.copy(q)) == "1Gi"


@pytest.mark.parametrize("bad", ["١٢٣", "٣Mi", "1e٣", "１Gi"])
def test_only_ascii_digits(bad):
    # Python's \d and Decimal() take other scripts' digits; apimachinery's grammar does not.
    with pytest.raises(ValueError, match="is not a quantity"):
        parse(bad)


@pytest.mark.parametrize("big", ["1e9999", "9" * 5000, "8Ei", "1e19", 2**63, 1e100, "-1e9999"])
def test_values_past_int64_are_refused(big):
    # The kubelet reads quantities as int64; 1e9999 would also break int() and JSON later.
    with pytest.raises(ValueError, match="too large for a quantity") as e:
        parse(big)
    assert len(str(e.value)) < 100


def test_int64_fits():
    assert parse(str(2**63 - 1)).to_bytes() == 2**63 - 1
    assert parse("7Ei").to_bytes() == 7 * 2**60


def test_tiny_values_round_up():
    assert parse("1e-9999").to_milli() == 1
    assert parse("0." + "0" * 5000 + "1").to_bytes() == 1
