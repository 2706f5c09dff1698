from __future__ import annotations

from voxflow.domain.limits import WINDOWS, Counts, Limits, passed


def counts(m15: int = 0, h1: int = 0, h24: int = 0, account: int = 0, link: int = 0) -> Counts:
    per = dict(zip(WINDOWS, (m15, h1, h24), strict=True))
    return Counts(per, concurrent_account=account, concurrent_link=link)


def test_each_limit_is_passed_when_the_count_reaches_it() -> None:
    limits = Limits(7, 9, 15, 3, 2)
    assert passed(limits, counts(6, 8, 14, 2, 1)) == []
    assert passed(limits, counts(m15=7)) == ["per_destination_15m"]
    assert passed(limits, counts(h1=9)) == ["per_destination_1h"]
    assert passed(limits, counts(h24=15)) == ["per_destination_24h"]
    assert passed(limits, counts(account=3)) == ["max_concurrent_account"]
    assert passed(limits, counts(link=2)) == ["max_concurrent_link"]


def test_zero_is_unlimited() -> None:
    assert passed(Limits(0, 0, 0, 0, 0), counts(10**6, 10**6, 10**6, 10**6, 10**6)) == []
    assert not Limits(0, 0, 0, 0, 0).checks_destination
    assert not Limits().checks_concurrency
    assert Limits(max_concurrent_link=1).checks_concurrency


def test_account_values_override_defaults_and_none_keeps_them() -> None:
    own = {"per_destination_15m": 0, "per_destination_1h": None, "max_concurrent_link": 4}
    assert Limits().overridden(own) == Limits(per_destination_15m=0, max_concurrent_link=4)
