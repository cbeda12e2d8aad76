#!/bin/bash
# Demo schema for the development stack, run once by the entrypoint on a new data
# directory: a `todos` table whose rows belong to the token's subject, protected by Row
# Level Security, and `app`, the non-superuser login role that applications use.
set -Eeuo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" --set app_password="${APP_PASSWORD:?set APP_PASSWORD}" <<'SQL'
create role app login password :'app_password';
grant usage on schema auth to app;

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
