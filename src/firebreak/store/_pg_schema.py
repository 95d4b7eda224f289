"""The PostgreSQL schema as an ordered list of migrations, applied under an advisory lock.

Everything lives in one schema of the caller's choosing (``firebreak`` by default), so
several deployments (or tests) share a database without meeting. ``schema_version`` holds
one row per applied migration; a schema whose highest version is above `LATEST` was
written by a newer firebreak and is refused untouched.

The SQL names no schema: connections run with ``search_path`` set to the store's schema.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

from firebreak.errors import StoreCorrupt

__all__ = ["LATEST", "MIGRATIONS", "migrate"]

_APPLY_BATCH_3 = """CREATE FUNCTION apply_batch(p_ops jsonb)
        RETURNS TABLE (o_n integer, o_found boolean, o_created boolean, o_done boolean,
                       o_seq integer, o_run_id text, o_workflow text, o_status text,
                       o_input json, o_created_at float8, o_updated_at float8,
                       o_resume_at float8, o_result json, o_error json, o_lease_owner text,
                       o_lease_token bigint, o_lease_expires float8)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            op record;
            v_run runs;
            v_after runs;
        BEGIN
            o_n := 0;
            FOR op IN
                SELECT e->>0 AS kind, e->>1 AS run_id, e->>2 AS owner,
                       (e->>3)::bigint AS token, (e->>4)::float8 AS now, e->>5 AS workflow,
                       e->>6 AS agent, e->>7 AS status, e->>8 AS data,
                       (e->>9)::integer AS attempts, e->>10 AS error, e->>11 AS reason,
                       (e->>12)::float8 AS num
                FROM jsonb_array_elements(p_ops) AS e
            LOOP
                o_n := o_n + 1;
                o_created := false;
                o_done := false;
                o_seq := NULL;
                v_run := NULL;
                IF op.kind = 'c' THEN
                    SELECT * INTO v_run FROM runs r WHERE r.run_id = op.run_id
                        FOR NO KEY UPDATE;
                    o_found := FOUND;
                    IF o_found AND v_run.lease_owner = op.owner
                            AND v_run.lease_token = op.token THEN
                        INSERT INTO steps AS s (run_id, agent, status, output, attempts, error,
                                                degraded_reason, seq, completed_at)
                        VALUES (op.run_id, op.agent, op.status, op.data::json,
                                op.attempts, op.error::json, op.reason,
                                COALESCE((SELECT MAX(x.seq) FROM steps x
                                          WHERE x.run_id = op.run_id), 0) + 1,
                                op.num)
                        ON CONFLICT (run_id, agent) DO NOTHING
                        RETURNING s.seq INTO o_seq;
                        o_done := o_seq IS NOT NULL;
                        IF o_done THEN
                            INSERT INTO audit (at, actor, run_id, kind, what)
                            VALUES (op.now, op.owner, op.run_id, 'step_committed',
                                    jsonb_build_object('agent', op.agent,
                                                       'status', op.status, 'seq', o_seq,
                                                       'attempts', op.attempts,
                                                       'token', op.token,
                                                       'degraded_reason', op.reason));
                        END IF;
                    END IF;
                    -- a commit's row carries only the fence (owner, token)
                    o_run_id := NULL;
                    o_workflow := NULL;
                    o_status := NULL;
                    o_input := NULL;
                    o_created_at := NULL;
                    o_updated_at := NULL;
                    o_resume_at := NULL;
                    o_result := NULL;
                    o_error := NULL;
                    o_lease_owner := v_run.lease_owner;
                    o_lease_token := v_run.lease_token;
                    o_lease_expires := NULL;
                    RETURN NEXT;
                    CONTINUE;
                ELSIF op.kind = 'b' THEN
                    INSERT INTO runs AS r (run_id, workflow, status, input, created_at,
                                           updated_at)
                    VALUES (op.run_id, op.workflow, 'pending', op.data::json, op.now,
                            op.now)
                    ON CONFLICT (run_id) DO NOTHING;
                    o_created := FOUND;
                    IF o_created THEN
                        INSERT INTO audit (at, actor, run_id, kind, what)
                        VALUES (op.now, NULL, op.run_id, 'run_created',
                                jsonb_build_object('workflow', op.workflow));
                    END IF;
                    SELECT * INTO v_run FROM runs r WHERE r.run_id = op.run_id
                        FOR NO KEY UPDATE;
                    o_found := FOUND;
                    IF o_found AND v_run.workflow = op.workflow
                            AND v_run.status NOT IN ('succeeded', 'degraded', 'failed')
                            AND (v_run.lease_owner IS NULL OR v_run.lease_expires IS NULL
                                 OR v_run.lease_expires <= op.now
                                 OR v_run.lease_owner = op.owner) THEN
                        UPDATE runs AS r SET lease_owner = op.owner,
                            lease_token = r.lease_token + 1, lease_expires = op.num,
                            status = 'running', result = NULL, error = NULL,
                            resume_at = NULL, updated_at = op.now
                        WHERE r.run_id = op.run_id
                        RETURNING r.* INTO v_after;
                        o_done := true;
                        INSERT INTO audit (at, actor, run_id, kind, what) VALUES
                            (op.now, op.owner, op.run_id, 'lease_acquired',
                             jsonb_build_object('token', v_after.lease_token,
                                                'expires_at', v_after.lease_expires,
                                                'previous', v_run.lease_owner)),
                            (op.now, op.owner, op.run_id, 'run_status',
                             jsonb_build_object('status', v_after.status,
                                                'resume_at', v_after.resume_at,
                                                'error', v_after.error::jsonb,
                                                'token', v_after.lease_token));
                        v_run := v_after;
                    END IF;
                ELSE
                    UPDATE runs AS r SET status = op.status, result = op.data::json,
                        error = op.error::json, resume_at = op.num,
                        updated_at = op.now, lease_owner = NULL, lease_expires = NULL
                    WHERE r.run_id = op.run_id AND r.lease_owner = op.owner
                        AND r.lease_token = op.token
                    RETURNING r.* INTO v_run;
                    o_done := FOUND;
                    IF o_done THEN
                        o_found := true;
                        INSERT INTO audit (at, actor, run_id, kind, what) VALUES
                            (op.now, op.owner, op.run_id, 'run_status',
                             jsonb_build_object('status', v_run.status,
                                                'resume_at', v_run.resume_at,
                                                'error', v_run.error::jsonb,
                                                'token', v_run.lease_token)),
                            (op.now, op.owner, op.run_id, 'lease_released',
                             jsonb_build_object('token', v_run.lease_token));
                    ELSE
                        SELECT * INTO v_run FROM runs r WHERE r.run_id = op.run_id;
                        o_found := FOUND;
                    END IF;
                END IF;
                o_run_id := v_run.run_id;
                o_workflow := v_run.workflow;
                o_status := v_run.status;
                o_input := v_run.input;
                o_created_at := v_run.created_at;
                o_updated_at := v_run.updated_at;
                o_resume_at := v_run.resume_at;
                o_result := v_run.result;
                o_error := v_run.error;
                o_lease_owner := v_run.lease_owner;
                o_lease_token := v_run.lease_token;
                o_lease_expires := v_run.lease_expires;
                RETURN NEXT;
            END LOOP;
        END $$"""
"""Migration 3's `apply_batch`, as released (migration 4 replaces it, derived from this)."""

_FINISH_WITH_COMMIT = """
                        IF o_done AND op.outcome IS NOT NULL THEN
                            -- the commit that settles the run: the run's finish, in this op
                            UPDATE runs AS r SET status = op.outcome,
                                result = op.result::json, error = NULL, resume_at = NULL,
                                updated_at = op.now, lease_owner = NULL, lease_expires = NULL
                            WHERE r.run_id = op.run_id;
                            INSERT INTO audit (at, actor, run_id, kind, what) VALUES
                                (op.now, op.owner, op.run_id, 'run_status',
                                 jsonb_build_object('status', op.outcome, 'resume_at', NULL,
                                                    'error', NULL, 'token', op.token)),
                                (op.now, op.owner, op.run_id, 'lease_released',
                                 jsonb_build_object('token', op.token));
                        END IF;"""


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"migration source changed: {old!r} is not there once")
    return text.replace(old, new)


def _apply_batch_4() -> str:
    """Migration 3's function with the commit that may carry its run's finish.

    A commit op may end with two more fields, the run's outcome (status) and result
    (JSON text): when the commit is the first, the run is finished in the same op
    (`commit_step_and_finish`), fenced by the run row the commit locked, with the audit
    rows a finish writes. Derived from the released text so the two cannot drift apart.
    """
    text = _replace_once(_APPLY_BATCH_3, "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    text = _replace_once(
        text,
        "(e->>12)::float8 AS num",
        "(e->>12)::float8 AS num, e->>13 AS outcome, e->>14 AS result",
    )
    committed = """'degraded_reason', op.reason));
                        END IF;"""
    return _replace_once(text, committed, committed + _FINISH_WITH_COMMIT)


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: runs, steps, shared state, dead letters, reviews, the audit trail, notifications.
    (
        """CREATE TABLE runs (
            run_id text PRIMARY KEY,
            workflow text NOT NULL,
            status text NOT NULL,
            input json NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            resume_at double precision,
            result json,
            error json,
            lease_owner text,
            lease_token bigint NOT NULL DEFAULT 0,
            lease_expires double precision,
            pos bigint GENERATED BY DEFAULT AS IDENTITY
        )""",
        "CREATE INDEX runs_by_created ON runs (created_at DESC, pos DESC)",
        "CREATE INDEX runs_by_workflow ON runs (workflow, created_at DESC, pos DESC)",
        "CREATE INDEX runs_paused ON runs (resume_at, pos) WHERE status = 'paused'",
        """CREATE TABLE steps (
            run_id text NOT NULL,
            agent text NOT NULL,
            status text NOT NULL,
            output json NOT NULL,
            attempts integer NOT NULL,
            error json,
            degraded_reason text,
            seq integer NOT NULL,
            completed_at double precision NOT NULL,
            PRIMARY KEY (run_id, agent)
        )""",
        # Next seq is MAX(seq) + 1: without this index every commit scans the run's steps.
        "CREATE INDEX steps_by_seq ON steps (run_id, seq)",
        """CREATE TABLE shared_state (
            run_id text PRIMARY KEY,
            version bigint NOT NULL,
            data json NOT NULL
        )""",
        """CREATE TABLE dead_letters (
            id text PRIMARY KEY,
            run_id text NOT NULL UNIQUE,
            workflow text NOT NULL,
            reason text NOT NULL,
            error json,
            input json NOT NULL,
            steps json,
            created_at double precision NOT NULL,
            pos bigint GENERATED BY DEFAULT AS IDENTITY
        )""",
        "CREATE INDEX dead_letters_by_pos ON dead_letters (pos)",
        """CREATE TABLE reviews (
            id text PRIMARY KEY,
            run_id text NOT NULL,
            workflow text NOT NULL,
            agent text NOT NULL,
            reason text NOT NULL,
            suggestions json NOT NULL,
            context json NOT NULL,
            status text NOT NULL,
            value json,
            created_at double precision NOT NULL,
            resolved_at double precision,
            pos bigint GENERATED BY DEFAULT AS IDENTITY
        )""",
        "CREATE UNIQUE INDEX reviews_open ON reviews (run_id, agent) WHERE status = 'open'",
        # The audit trail: who (lease owner; the client's application_name), when (the
        # store's clock), what (JSON). Append-only, enforced by triggers, not by manners.
        """CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL,
            actor text,
            client text NOT NULL DEFAULT current_setting('application_name'),
            run_id text,
            kind text NOT NULL,
            what jsonb NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_by_run ON audit (run_id, id)",
        """CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the firebreak audit table is append-only (% refused)', TG_OP;
        END $$""",
        """CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
            FOR EACH ROW EXECUTE FUNCTION audit_is_append_only()""",
        """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
            FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only()""",
        # NOTIFY firebreak_<schema>, '<run_id>/<agent>' on every step commit or change, and
        # '<run_id>/' on run creation and status change; delivered at commit, so a
        # listener that hears it can read the row.
        """CREATE FUNCTION notify_step() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('firebreak_' || TG_TABLE_SCHEMA, NEW.run_id || '/' || NEW.agent);
            RETURN NULL;
        END $$""",
        """CREATE FUNCTION notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('firebreak_' || TG_TABLE_SCHEMA, NEW.run_id || '/');
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER steps_notify AFTER INSERT OR UPDATE ON steps
            FOR EACH ROW EXECUTE FUNCTION notify_step()""",
        """CREATE TRIGGER runs_notify_created AFTER INSERT ON runs
            FOR EACH ROW EXECUTE FUNCTION notify_run()""",
        """CREATE TRIGGER runs_notify_status AFTER UPDATE OF status, result, error, resume_at
            ON runs FOR EACH ROW EXECUTE FUNCTION notify_run()""",
    ),
    # 2: one-statement forms of the hot paths. First, group commit in one statement per
    # batch. For each commit, in the order given: lock the run's row, and if the lease
    # (owner, token) is current insert the step (first commit wins; seq = MAX + 1, read by a
    # statement started after the lock, so it sees every earlier commit to the run) and its
    # audit entry. Nothing is raised for an unknown run, a stale lease or a duplicate: each
    # row returned says (found, owner, token, seq), and the client judges each commit alone.
    (
        """CREATE FUNCTION commit_steps(
            p_run_id text[], p_agent text[], p_status text[], p_output text[],
            p_attempts integer[], p_error text[], p_reason text[], p_at float8[],
            p_now float8[], p_owner text[], p_token bigint[]
        ) RETURNS TABLE (o_n integer, o_found boolean, o_owner text, o_token bigint,
                         o_seq integer)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            i integer;
        BEGIN
            FOR i IN 1 .. coalesce(array_length(p_run_id, 1), 0) LOOP
                o_n := i;
                o_seq := NULL;
                SELECT r.lease_owner, r.lease_token INTO o_owner, o_token
                    FROM runs r WHERE r.run_id = p_run_id[i] FOR NO KEY UPDATE;
                o_found := FOUND;
                IF o_found AND o_owner = p_owner[i] AND o_token = p_token[i] THEN
                    INSERT INTO steps AS s (run_id, agent, status, output, attempts, error,
                                            degraded_reason, seq, completed_at)
                    VALUES (p_run_id[i], p_agent[i], p_status[i], p_output[i]::json,
                            p_attempts[i], p_error[i]::json, p_reason[i],
                            COALESCE((SELECT MAX(x.seq) FROM steps x
                                      WHERE x.run_id = p_run_id[i]), 0) + 1,
                            p_at[i])
                    ON CONFLICT (run_id, agent) DO NOTHING
                    RETURNING s.seq INTO o_seq;
                    IF o_seq IS NOT NULL THEN
                        INSERT INTO audit (at, actor, run_id, kind, what)
                        VALUES (p_now[i], p_owner[i], p_run_id[i], 'step_committed',
                                jsonb_build_object('agent', p_agent[i], 'status', p_status[i],
                                                   'seq', o_seq, 'attempts', p_attempts[i],
                                                   'token', p_token[i],
                                                   'degraded_reason', p_reason[i]));
                    END IF;
                END IF;
                RETURN NEXT;
            END LOOP;
        END $$""",
        # `begin_run` in one statement: create the run unless it exists, lock its row, and
        # take the lease and mark it running if `_rules.decide_lease` allows (free, expired
        # or already ours; every acquisition takes the next token); each step a statement of
        # its own, so each sees the ones before. Returns no row if the run vanished, else one:
        # (created, leased, the run after the update if leased, else as locked).
        """CREATE FUNCTION begin_run(
            p_run_id text, p_workflow text, p_input text, p_now float8, p_owner text,
            p_expires float8
        ) RETURNS TABLE (o_created boolean, o_leased boolean, o_run_id text,
                         o_workflow text, o_status text, o_input json, o_created_at float8,
                         o_updated_at float8, o_resume_at float8, o_result json, o_error json,
                         o_lease_owner text, o_lease_token bigint, o_lease_expires float8)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            v_created boolean;
            v_leased boolean;
            v_run runs;
            v_after runs;
        BEGIN
            WITH ins AS (
                INSERT INTO runs AS r (run_id, workflow, status, input, created_at, updated_at)
                VALUES (p_run_id, p_workflow, 'pending', p_input::json, p_now, p_now)
                ON CONFLICT (run_id) DO NOTHING
                RETURNING r.run_id, r.workflow
            ), aud AS (
                INSERT INTO audit (at, actor, run_id, kind, what)
                SELECT p_now, NULL, ins.run_id, 'run_created',
                       jsonb_build_object('workflow', ins.workflow) FROM ins
            )
            SELECT true INTO v_created FROM ins;
            SELECT * INTO v_run FROM runs r WHERE r.run_id = p_run_id FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            UPDATE runs AS r SET lease_owner = p_owner, lease_token = r.lease_token + 1,
                lease_expires = p_expires, status = 'running', result = NULL, error = NULL,
                resume_at = NULL, updated_at = p_now
            WHERE r.run_id = p_run_id AND r.workflow = p_workflow
                AND r.status NOT IN ('succeeded', 'degraded', 'failed')
                AND (r.lease_owner IS NULL OR r.lease_expires IS NULL
                     OR r.lease_expires <= p_now OR r.lease_owner = p_owner)
            RETURNING r.* INTO v_after;
            v_leased := FOUND;
            IF v_leased THEN
                INSERT INTO audit (at, actor, run_id, kind, what) VALUES
                    (p_now, p_owner, p_run_id, 'lease_acquired',
                     jsonb_build_object('token', v_after.lease_token,
                                        'expires_at', v_after.lease_expires,
                                        'previous', v_run.lease_owner)),
                    (p_now, p_owner, p_run_id, 'run_status',
                     jsonb_build_object('status', v_after.status,
                                        'resume_at', v_after.resume_at,
                                        'error', v_after.error::jsonb,
                                        'token', v_after.lease_token));
                v_run := v_after;
            END IF;
            RETURN QUERY SELECT coalesce(v_created, false), v_leased, v_run.run_id,
                v_run.workflow, v_run.status, v_run.input, v_run.created_at, v_run.updated_at,
                v_run.resume_at, v_run.result, v_run.error, v_run.lease_owner,
                v_run.lease_token, v_run.lease_expires;
        END $$""",
    ),
    # 3: the hot writes of many runs in one statement (`_pg_batch`), and updates that stay
    # on their page. `apply_batch` takes a JSON array of operations, each an array (kind,
    # run_id, owner, token, now, workflow, agent, status, data, attempts, error, reason,
    # num: one json.dumps on the client instead of an array parameter per field), and
    # applies them in the order given, each as statements of its own (so each sees the
    # ones before): 'b' begins a run (create unless it exists, lock, take the lease and
    # mark it running if `_rules.decide_lease` allows), 'c' commits a step (as
    # `commit_steps`), 'f' finishes a run (fenced status and lease release). Nothing is
    # raised for an unknown run, a stale lease or a duplicate: each row returned says what
    # happened and the client judges each operation alone. num is the lease expiry ('b'),
    # the step's completed_at ('c') or the resume time ('f'); data the input, the step's
    # output or the result (JSON text). Every lookup of a run is by its key alone: with no
    # statistics yet (a new schema), the planner chose `runs_by_workflow` for begin_run's
    # conditional update (migration 2), and the plan, cached for the session, kept
    # scanning every run of the workflow as the table grew.
    (
        _APPLY_BATCH_3,
        # Status is no longer in an index predicate, so a status change need not touch
        # the indexes (a HOT update) when the page has room, which the fill factor keeps.
        "DROP INDEX runs_paused",
        "CREATE INDEX runs_resume ON runs (resume_at, pos) WHERE resume_at IS NOT NULL",
        "ALTER TABLE runs SET (fillfactor = 50)",
    ),
    # 4: a step commit that may also finish its run (`_apply_batch_4`).
    (_apply_batch_4(),),
    # 5: a run's review items, open and resolved, without reading the whole queue
    # (`review_of_run`: every resume of a run waiting for review).
    ("CREATE INDEX reviews_by_run ON reviews (run_id, pos)",),
)
"""Migration N+1 is ``MIGRATIONS[N]``; append, never edit a released one."""

LATEST = len(MIGRATIONS)


async def _version(conn: AsyncConnection[Any], schema: str, where: str) -> int:
    """Return the schema's version: 0 if absent or empty; refuse a foreign one."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm')",
        (schema,),
    )
    tables = {str(row[0]) for row in await cur.fetchall()}
    if not tables:
        return 0
    if "schema_version" not in tables:
        raise StoreCorrupt(
            f"{where}: schema {schema!r} holds tables firebreak did not create "
            f"({', '.join(sorted(tables)[:5])}); refusing to touch it"
        )
    cur = await conn.execute(
        sql.SQL("SELECT COALESCE(MAX(version), 0) FROM {}.schema_version").format(
            sql.Identifier(schema)
        )
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: AsyncConnection[Any], schema: str, where: str) -> int:
    """Create or upgrade `schema` to `LATEST`; return the version found before.

    One transaction under a transaction-level advisory lock keyed by the schema name: two
    processes running ``setup()`` at once apply each migration exactly once, and a failed
    migration leaves nothing half-done (PostgreSQL DDL is transactional).

    Raises:
        StoreCorrupt: the schema is foreign or was written by a newer firebreak.
    """
    ident = sql.Identifier(schema)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"firebreak:{schema}",)
        )
        found = await _version(conn, schema, where)
        if found > LATEST:
            raise StoreCorrupt(
                f"{where}: schema {schema!r} was written by a newer firebreak "
                f"(schema {found} > {LATEST}); upgrade firebreak to open it"
            )
        if found == LATEST:
            return found
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now(),"
            " by_client text NOT NULL DEFAULT current_setting('application_name'))"
        )
        for version in range(found + 1, LATEST + 1):
            for statement in MIGRATIONS[version - 1]:
                await conn.execute(statement.encode())
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return found
