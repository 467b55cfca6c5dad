-- The queue features the first migration left room for: delayed enqueue,
-- per-partition limits, fair leasing and bounded dead letters.

-- item_not_before is the item's own NotBefore as it was enqueued (the
-- payload's notBefore, kept for the worker and for a drain). not_before
-- stays what it was: when a scheduled row becomes pending, cleared then.
ALTER TABLE items ADD COLUMN item_not_before timestamptz;
-- leased_partition is a live lease's partition_key, set only by queues with
-- partition rules (and cleared when the lease ends), so that the index that
-- counts a partition's leases holds their leases alone and costs a queue
-- without rules nothing.
ALTER TABLE items ADD COLUMN leased_partition text;

-- The partitions table is kept only by queues with partition rules
-- (MaxActivePerPartition, or partitions fairness). Each row is recomputed
-- from the items (a few index probes) by every transaction that touched the
-- partition, after it took the counter row, so rows are written one
-- transaction at a time; a lease locks the rows it takes items from
-- FOR UPDATE SKIP LOCKED, so two dispatchers never lease from one partition
-- at once. ready_count of the first migration is not kept (counting a
-- partition's backlog would scan it): head_seq says whether it has any.
ALTER TABLE partitions
    ADD COLUMN head_seq     bigint,  -- its oldest ready item, NULL when none
    ADD COLUMN delayed_head bigint,  -- strict partitions: its oldest scheduled item (which holds it while older than head_seq)
    ADD COLUMN leasable     boolean NOT NULL DEFAULT false; -- head_seq set, below the limit, not held
DROP INDEX partitions_round_robin;
-- Fifo: the leasable partitions by their oldest ready item.
CREATE INDEX partitions_fifo ON partitions (head_seq) WHERE leasable;
-- Partitions fairness: the leasable partitions, least recently served first.
CREATE INDEX partitions_fair ON partitions (last_served, partition_key) WHERE leasable;
-- last_served values: drawn while the counter row is held, so they grow in
-- commit order.
CREATE SEQUENCE partition_serve;

-- A partition's oldest scheduled item (strict partitions) and its live
-- leases (the limit), each one index probe.
CREATE INDEX items_scheduled_partition ON items (partition_key, sequence_id) WHERE state = 'scheduled';
CREATE INDEX items_leased_partition ON items (leased_partition) WHERE leased_partition IS NOT NULL;

-- partition_rules names the rules the partitions table is kept for ('' when
-- none): a queue that opens with other rules rebuilds the table first.
ALTER TABLE queue_state ADD COLUMN partition_rules text NOT NULL DEFAULT '';
