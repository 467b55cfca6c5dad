-- Partitions whose row a transaction had to leave as it was: it changed the
-- partition's items while another transaction held the row (a lease in
-- progress), so it skipped the row rather than wait for it. The mark is
-- written in the skipping transaction, so it commits (and rolls back) with
-- the change it stands for, and it outlives the process that wrote it:
-- every later transaction that recomputes partition rows (any process's
-- commits, and every sweep) recomputes the marked rows too and removes
-- their marks. A queue without partition rules never writes it.
CREATE TABLE partition_dirty (
    partition_key text PRIMARY KEY
);
