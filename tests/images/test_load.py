"""Load: many users at once against the RLS table, directly and through pgbouncer.

Half the clients hold a session-scoped identity on their own server connection (role
app_direct, `pg_session_jwt.require_jti` on as shipped, refreshed with tokens of higher jti);
the other half go through pgbouncer in transaction mode with transaction-scoped sessions
(role app). Through a transaction pooler one server backend serves every pooled client, so
tokens minted by different clients arrive there out of jti order and a per-backend
"strictly increasing jti" would refuse valid tokens (23514) at random: the pooled role has
`require_jti = off` as a role setting (read at connection start, so no session can change
it), while direct connections keep it on. The test checks that split before the load.

Passes when no client ever got a row of another user (or an identity without a session),
no error at all occurred, and every acknowledged insert and update is in the table.
Full size (64 clients x 60 s) on the default major, CI size on every other major or
with PG_SESSION_JWT_STRESS_SCALE=ci; TPS goes to tests/logs/stress-<test>.json.
"""

import psycopg
import pytest

from builder import matrix
from devtools.jwt import mint
from tests.support import load

pytestmark = [pytest.mark.stress, pytest.mark.container, pytest.mark.slow]

POOL_SIZE = 10


def check_jti_split(pg, pooler, client):
    """Direct: an older token is refused (23514) after a newer one; pooled: jti is off."""
    older, newer = mint(client.key, sub=client.sub), mint(client.key, sub=client.sub)
    with psycopg.connect(pg.dsn(load.DIRECT_ROLE, load.ROLE_PASSWORD), autocommit=True) as conn:
        conn.execute("select auth.jwt_session_init(%s)", (newer,))
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("select auth.jwt_session_init(%s)", (older,))
        assert refused.value.sqlstate == "23514", refused.value
    with psycopg.connect(pooler.dsn(load.POOLED_ROLE, load.ROLE_PASSWORD), autocommit=True,
                         prepare_threshold=None) as conn:
        assert conn.execute("show pg_session_jwt.require_jti").fetchone()[0] == "off"


def test_rls_load(pg_major, image, stress_scale, pooler_image, resources, write_result):
    clients_n, seconds = stress_scale if pg_major == matrix.load().default.major \
        else load.SCALES["ci"]
    clients = load.make_clients(clients_n, pooled=True)
    network = resources.network()
    pg = resources.start(image, environment={"PG_SESSION_JWT_JWK": load.jwks(clients)},
                         network=network)
    with pg.connect() as conn:
        load.create_schema(conn)
    pooler = resources.pooler(pooler_image, pg, network, app_password=load.ROLE_PASSWORD,
                              pool_size=POOL_SIZE)
    check_jti_split(pg, pooler, clients[0])
    load.connect_clients(clients, pg.dsn(load.DIRECT_ROLE, load.ROLE_PASSWORD),
                         pooler.dsn(load.POOLED_ROLE, load.ROLE_PASSWORD))

    run = load.Load(clients, seconds)
    stats = run.run()
    with pg.connect() as conn:
        problems = load.durability_problems(run.ledgers.values(), load.read_table(conn))
    summary = load.summary(run, stats, f"rls-load pg{pg_major}")
    summary["pool_size"] = POOL_SIZE
    write_result(summary)

    assert stats.violations == [], stats.violations[:20]
    assert stats.unexpected == [], stats.unexpected[:20]
    assert stats.errors == {}, stats.samples
    assert problems == [], problems[:20]
    by_mode = run.transactions_by_mode()
    assert by_mode.get("direct", 0) > 0 and by_mode.get("pooled", 0) > 0, by_mode
    for op in ("insert", "select", "update", "refresh", "anonymous"):
        assert stats.operations[op] > 0, stats.operations
