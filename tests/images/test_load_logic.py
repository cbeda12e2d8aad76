"""The pure parts of tests/support/load.py: the scale setting, row checks, the clients' ledgers
and the durability comparison the fault tests rely on."""

import pytest

from runtime.errors import UserError
from tests.support import load


def test_scale_defaults_to_full_and_knows_ci():
    assert load.scale({}) == (64, 60.0)
    assert load.scale({load.SCALE_VARIABLE: "ci"}) == (16, 10.0)
    assert load.scale({load.SCALE_VARIABLE: " FULL "}) == (64, 60.0)


def test_unknown_scale_names_the_variable_and_choices():
    with pytest.raises(UserError, match="PG_SESSION_JWT_STRESS_SCALE.*ci, full"):
        load.scale({load.SCALE_VARIABLE: "huge"})


def test_foreign_rows_are_those_of_another_owner():
    rows = [(1, "alice"), (2, "bob"), (3, "alice"), (4, None)]
    assert load.foreign_rows("alice", rows) == [(2, "bob"), (4, None)]
    assert load.foreign_rows("alice", [(1, "alice")]) == []


def ledger(sub="alice"):
    return load.Ledger(sub)


def test_all_acknowledged_present_is_no_problem():
    led = ledger()
    led.committed(inserted=[1, 2])
    led.committed(updated=[1])
    led.committed(updated=[1])
    assert load.durability_problems([led], {1: ("alice", 2), 2: ("alice", 0)}) == []


def test_a_missing_acknowledged_row_is_reported():
    led = ledger()
    led.committed(inserted=[1, 2])
    assert load.durability_problems([led], {1: ("alice", 0)}) == [
        "alice: acknowledged row 2 is missing"]


def test_a_lost_acknowledged_update_is_reported():
    led = ledger()
    led.committed(inserted=[7])
    led.committed(updated=[7])
    assert load.durability_problems([led], {7: ("alice", 0)}) == [
        "alice: row 7 has n=0, acknowledged 1 (+0 in doubt)"]


def test_in_doubt_commits_may_or_may_not_be_there():
    led = ledger()
    led.committed(inserted=[1])
    led.in_doubt(inserted=[2], updated=[1])
    assert load.durability_problems([led], {1: ("alice", 0)}) == []
    assert load.durability_problems([led], {1: ("alice", 1), 2: ("alice", 0)}) == []
    assert load.durability_problems([led], {1: ("alice", 2)}) == [
        "alice: row 1 has n=2, acknowledged 0 (+1 in doubt)"]


def test_a_row_changing_owner_or_appearing_from_nowhere_is_reported():
    alice, bob = ledger("alice"), ledger("bob")
    alice.committed(inserted=[1])
    found = {1: ("bob", 0), 9: ("alice", 0)}
    assert load.durability_problems([alice, bob], found) == [
        "alice: row 1 now belongs to 'bob'",
        "alice: row 9 was never inserted by this client",
        "bob: row 1 was never inserted by this client",
    ]


def test_stats_merge_keeps_the_first_sample_of_each_error():
    a, b = load.Stats(transactions=2, rows_checked=5), load.Stats(transactions=3)
    a.expected_error("53100", Exception("disk full 1"))
    b.expected_error("53100", Exception("disk full 2"))
    b.violations.append("x")
    total = load.Stats().merge(a).merge(b)
    assert (total.transactions, total.rows_checked, total.violations) == (5, 5, ["x"])
    assert total.errors == {"53100": 2} and total.samples == {"53100": "disk full 1"}


def test_clients_alternate_modes_and_get_their_own_keys():
    clients = load.make_clients(4, pooled=True, prefix="u")
    assert [c.mode for c in clients] == ["direct", "pooled", "direct", "pooled"]
    assert len({c.key.thumbprint() for c in clients}) == 4
    load.connect_clients(clients, "direct-dsn", "pooled-dsn")
    assert [c.dsn for c in clients] == ["direct-dsn", "pooled-dsn"] * 2
    assert {c.mode for c in load.make_clients(3)} == {"direct"}
    assert load.jwks(clients).count('"kty":"OKP"') == 4
