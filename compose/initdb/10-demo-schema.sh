#!/bin/bash
# Demo schema for the development stack, run once by the entrypoint on a new data
# directory: a `todos` table whose rows belong to the token's subject, protected by Row
# Level Security, and `app`, the non-superuser login role that applications use.
set -Eeuo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" --set app_password="${APP_PASSWORD:?set APP_PASSWORD}" \
    --set db="${POSTGRES_DB:-postgres}" <<'SQL'
create role app login password :'app_password';
grant usage on schema auth to app;

-- `app` is one role for many end users, and pgbouncer (transaction mode) hands one
-- server connection to one client after another. Two things keep one user's identity
-- from reaching the next:
--
-- No temporary objects. A temp table, view, function or type lives on the server
-- connection, not the client, and is searched before the schemas a query names without
-- a schema: a client could plant `pg_temp.todos` (a view that records what the next
-- client reads) or code that runs in the next client's transactions. PUBLIC gets TEMP
-- on every database by default; take it back (superusers, like postgres, keep it).
-- PostgreSQL 15+ already gives PUBLIC no CREATE on schema public, so app owns nothing.
revoke temporary on database :"db" from public;
revoke temporary on database postgres from public;

-- Transaction-scoped sessions only, read at connection start (a client cannot SET it
-- back): auth.jwt_session_init(token) without `true` would leave the identity on the
-- server connection for the next client, so it is an ERROR for app; the session ends
-- with the client's transaction.
alter role app set pg_session_jwt.session_scope = transaction;

create table public.todos (
    id bigint generated always as identity primary key,
    owner text not null default auth.user_id(),
    title text not null,
    done boolean not null default false,
    created_at timestamptz not null default now()
);
comment on table public.todos is 'pg_session_jwt demo: each row belongs to the sub of the token that inserted it';

-- The table belongs to postgres, not to app, so RLS applies to app; FORCE keeps it
-- applying should a non-superuser ever own the table.
alter table public.todos enable row level security;
alter table public.todos force row level security;

-- `(select auth.user_id())` is evaluated once per statement, not once per row.
create policy todos_select on public.todos for select to app
    using (owner = (select auth.user_id()));
create policy todos_insert on public.todos for insert to app
    with check (owner = (select auth.user_id()));
create policy todos_update on public.todos for update to app
    using (owner = (select auth.user_id()))
    with check (owner = (select auth.user_id()));
create policy todos_delete on public.todos for delete to app
    using (owner = (select auth.user_id()));

grant select, insert, update (title, done), delete on public.todos to app;
SQL
