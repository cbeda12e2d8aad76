"""Django with ATOMIC_REQUESTS: a middleware gives each request's transaction the user's
token through `connection.execute_wrapper`, and nothing outlives the request.

    pip install "django>=5.2,<6" "psycopg[binary]"
    DATABASE_URL=postgresql://app:app@127.0.0.1:56432/demo ALICE_TOKEN=... BOB_TOKEN=... \\
        python examples/django_middleware.py

With ATOMIC_REQUESTS the view runs in one transaction, opened after the middleware ran.
The middleware therefore installs an execute wrapper for the request; before the first
query of each outermost atomic block it runs `auth.jwt_session_init(%s, true)` in that
transaction. `true` ends the identity at COMMIT/ROLLBACK, so Django's persistent
connections (CONN_MAX_AGE) and pgbouncer's server connections carry none to the next
request. A query outside a transaction gets no identity (there is none to give it).

Two settings matter. `"server_side_binding": True`: Django's psycopg 3 backend binds on
the client by default, which would write the token into the SQL text (pg_stat_activity,
statement logs); with it, the server sees `$1`. `DISABLE_SERVER_SIDE_CURSORS`: needed
behind a transaction-mode pooler for `.iterator()` querysets (Django's documentation).

This file is a whole project (settings, URLconf, view) so that it runs as is; it drives
the view through Django's test client, which runs the middleware and ATOMIC_REQUESTS as
a real server would. Prints what each request saw; exits non-zero if rows were not kept
apart.
"""

import json
import os
from urllib.parse import unquote, urlsplit

import django
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.urls import path


class JwtSessionMiddleware:
    """`Authorization: Bearer <token>` becomes the identity of the request's transaction."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        if token is None:
            return self.get_response(request)
        with connection.execute_wrapper(JwtSessionWrapper(token)):
            return self.get_response(request)


class JwtSessionWrapper:
    """Runs jwt_session_init once per outermost atomic block, before its first query."""

    def __init__(self, token):
        self.token = token
        self.block = None

    def __call__(self, execute, sql, params, many, context):
        db = context["connection"]
        if db.in_atomic_block and db.atomic_blocks and db.atomic_blocks[0] is not self.block:
            self.block = db.atomic_blocks[0]
            execute("select auth.jwt_session_init(%s, true)", [self.token], False, context)
        return execute(sql, params, many, context)


def todos(request):
    with connection.cursor() as cursor:
        if request.method == "POST":
            cursor.execute("insert into todos (title) values (%s)", [request.POST["title"]])
        cursor.execute("select owner from todos order by id")
        owners = sorted({row[0] for row in cursor.fetchall()})
        cursor.execute("select auth.user_id()")
        return JsonResponse({"owners": owners, "user": cursor.fetchone()[0]})


urlpatterns = [path("todos", todos)]


def configure(url):
    parts = urlsplit(url)
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[f"{__name__}.JwtSessionMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/"), "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""), "HOST": parts.hostname,
            "PORT": str(parts.port or 5432),
            "ATOMIC_REQUESTS": True,
            "CONN_MAX_AGE": 60,                    # one connection for every request below
            "DISABLE_SERVER_SIDE_CURSORS": True,
            "OPTIONS": {"server_side_binding": True},
        }},
    )
    django.setup()


def main():
    url, alice, bob = (os.environ[name] for name in ("DATABASE_URL", "ALICE_TOKEN", "BOB_TOKEN"))
    configure(url)
    from django.test import Client

    def call(token, title=None):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        client = Client(headers=headers)
        response = (client.post("/todos", {"title": title}) if title
                    else client.get("/todos"))
        return response.json()

    out = {"alice": call(alice, "Django recipe"), "bob": call(bob, "Django recipe"),
           "anonymous": call(None), "alice_again": call(alice)}
    print(json.dumps(out))
    apart = (out["alice"] == out["alice_again"] == {"owners": ["alice"], "user": "alice"}
             and out["bob"] == {"owners": ["bob"], "user": "bob"}
             and out["anonymous"] == {"owners": [], "user": None})
    raise SystemExit(0 if apart else "rows were not kept apart")


if __name__ == "__main__":
    main()
