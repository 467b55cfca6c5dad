-- The whole schema the store needs, queue included, so that later versions
-- only ever add to it. It runs with search_path set to the store's schema,
-- inside the migration transaction (under the migration advisory lock).
--
-- Conventions: times are timestamptz from the database clock
-- (coalesce($now, now()) in every statement); states are text with a CHECK,
-- so a new state is an ALTER of the constraint, not of a type; every index
-- that a hot path scans is partial, so it holds only the rows that path
-- wants and stays small however many rows the table churns through.

-- queue_state is the serialization point: one row, taken FOR UPDATE by
-- every mutation in the last statement before COMMIT. Item sequence ids and
-- event sequence numbers are drawn from it (a sequence would neither be
-- gap-free nor follow commit order), and it holds the counts that stats
-- read (never count(*)).
CREATE TABLE queue_state (
    id                     boolean     PRIMARY KEY DEFAULT true CHECK (id),
    next_sequence_id       bigint      NOT NULL DEFAULT 1 CHECK (next_sequence_id > 0),
    next_event_sequence    bigint      NOT NULL DEFAULT 1 CHECK (next_event_sequence > 0),
    pending_count          bigint      NOT NULL DEFAULT 0 CHECK (pending_count >= 0),     -- ready now (state pending)
    active_count           bigint      NOT NULL DEFAULT 0 CHECK (active_count >= 0),      -- leased
    dead_letter_count      bigint      NOT NULL DEFAULT 0 CHECK (dead_letter_count >= 0), -- dead
    delayed_count          bigint      NOT NULL DEFAULT 0 CHECK (delayed_count >= 0),     -- scheduled
    events_trimmed_through bigint      NOT NULL DEFAULT 0, -- retention: every event up to here is deleted
    paused                 boolean     NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50); -- room for HOT updates of the one hot row
INSERT INTO queue_state DEFAULT VALUES;

-- items holds every item the queue knows: pending (leasable now), scheduled
-- (not before not_before: a delayed enqueue or a requeue backoff; a timer
-- promotes it to pending, so leases never scan delayed rows), leased, and
-- dead (a dead letter, until redriven or purged). Completed items are
-- deleted.
CREATE TABLE items (
    sequence_id         bigint      PRIMARY KEY,
    state               text        NOT NULL CHECK (state IN ('pending', 'scheduled', 'leased', 'dead')),
    resource_type       text        NOT NULL,
    resource_id         text        NOT NULL,
    partition_key       text        NOT NULL,
    payload_encoding    text        NOT NULL,
    body                bytea,
    attributes          jsonb,
    request_id          text,
    trace_context       text,       -- W3C traceparent (and tracestate) of the enqueue
    attempt             integer     NOT NULL DEFAULT 1 CHECK (attempt > 0), -- the current or next lease's attempt
    release_count       integer     NOT NULL DEFAULT 0, -- releases of the current lease chain
    enqueued_at         timestamptz NOT NULL,
    not_before          timestamptz, -- scheduled: when it becomes pending
    lease_id            uuid,        -- leased: the live lease (the token is sequence_id, attempt, lease_id)
    leased_at           timestamptz,
    lease_expires_at    timestamptz,
    owner_peer_id       text,
    last_error          jsonb,       -- {"message", "code"} carried to the next attempt
    last_token_attempt  integer,     -- the most recent lease's token, if any
    last_token_lease_id uuid,
    dead_lettered_at    timestamptz,
    reason              text,        -- dead: why
    reason_code         text,
    dead_event          bigint,      -- dead: the event sequence of the dead-lettering
    CHECK (state <> 'leased' OR (lease_id IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK (state <> 'scheduled' OR not_before IS NOT NULL),
    CHECK (state <> 'dead' OR dead_lettered_at IS NOT NULL)
) WITH (
    -- A queue table churns: every row is inserted, updated a few times and
    -- deleted within seconds. Vacuum it early so the dead tuples that a
    -- SKIP LOCKED scan of the ready index must step over stay few.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);
-- Ready items in FIFO order: what a lease takes (FOR UPDATE SKIP LOCKED).
CREATE INDEX items_ready ON items (sequence_id) WHERE state = 'pending';
-- Ready items per partition: fair leasing and MaxActivePerPartition.
CREATE INDEX items_ready_partition ON items (partition_key, sequence_id) WHERE state = 'pending';
-- Live leases by expiry: what the sweeper scans.
CREATE INDEX items_leased_expiry ON items (lease_expires_at) WHERE state = 'leased';
-- Scheduled items by due time: what the promotion timer scans.
CREATE INDEX items_scheduled ON items (not_before, sequence_id) WHERE state = 'scheduled';
-- Dead letters: listed by sequence id, purged oldest first by retention.
CREATE INDEX items_dead ON items (sequence_id) WHERE state = 'dead';
CREATE INDEX items_dead_age ON items (dead_lettered_at, sequence_id) WHERE state = 'dead';

-- partitions is one row per partition that has ready or leased items. Its
-- rows are locked FOR UPDATE SKIP LOCKED to enforce MaxActivePerPartition
-- and to serve partitions round-robin (least recently served first) across
-- every dispatcher.
CREATE TABLE partitions (
    partition_key   text        PRIMARY KEY,
    active_count    integer     NOT NULL DEFAULT 0 CHECK (active_count >= 0), -- leased items
    ready_count     bigint      NOT NULL DEFAULT 0 CHECK (ready_count >= 0),  -- pending items
    last_served     bigint      NOT NULL DEFAULT 0, -- round-robin cursor: larger means served more recently
    updated_at      timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
CREATE INDEX partitions_round_robin ON partitions (last_served, partition_key) WHERE ready_count > 0;

-- events is the replication log: one global, gap-free, strictly increasing
-- sequence, each event written in its mutation's transaction. Retention
-- deletes from the low end by sequence number (the primary key); the BRIN
-- index serves retention by age at almost no cost, since ts grows with the
-- sequence.
CREATE TABLE events (
    sequence_number  bigint      PRIMARY KEY,
    event_type       text        NOT NULL,
    ts               timestamptz NOT NULL,
    ownership        jsonb,      -- the token {"sequenceId", "attempt", "leaseId"}
    peer_id          text,
    item_sequence_id bigint,     -- the item the event is about, if one
    payload          jsonb,      -- the item as the wire carries it
    error            jsonb,
    metadata         jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX events_ts ON events USING brin (ts);

-- dedupe remembers request ids for the dedupe window.
CREATE TABLE dedupe (
    request_id  text        PRIMARY KEY,
    sequence_id bigint      NOT NULL,
    result      jsonb,      -- what the first enqueue answered
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX dedupe_expires ON dedupe (expires_at);

-- peers holds each worker peer's breaker counters, updated by the expiry and
-- settle transactions and cached by every dispatcher for at most a second.
CREATE TABLE peers (
    peer_id                text        PRIMARY KEY,
    active_leases          integer     NOT NULL DEFAULT 0,
    consecutive_failures   integer     NOT NULL DEFAULT 0, -- failures and expiry sweeps since the last success
    successes              bigint      NOT NULL DEFAULT 0,
    failures               bigint      NOT NULL DEFAULT 0,
    expiries               bigint      NOT NULL DEFAULT 0,
    breaker_state          text        NOT NULL DEFAULT 'closed' CHECK (breaker_state IN ('closed', 'open', 'half-open')),
    breaker_opened_at      timestamptz,
    last_activity_at       timestamptz, -- last lease, heartbeat, settle or release
    last_disconnect_at     timestamptz,
    last_disconnect_reason text,
    metadata               jsonb,
    updated_at             timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
CREATE INDEX peers_updated ON peers (updated_at); -- retention of idle peers

-- state_records is the deterministic StateStore: each event's effect,
-- recorded once mesh-wide. Keys are arbitrary bytes of any length, so the
-- unique index is on their SHA-256 (a B-tree entry must fit in a third of a
-- page); lookups compare the key too.
CREATE TABLE state_records (
    key            bytea       NOT NULL,
    key_hash       bytea       GENERATED ALWAYS AS (sha256(key)) STORED PRIMARY KEY,
    kind           text        NOT NULL,
    version        bigint      NOT NULL,
    payload        bytea       NOT NULL,
    recorded_at    timestamptz NOT NULL, -- to the microsecond
    recorded_at_ns smallint    NOT NULL DEFAULT 0 CHECK (recorded_at_ns BETWEEN 0 AND 999) -- the nanoseconds below it
);
