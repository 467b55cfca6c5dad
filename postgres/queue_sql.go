package postgres

import (
	"strings"
)

// queueSQL holds the queue's statements with the store's schema filled in.
// Their texts never vary with the batch (variable parts travel as arrays),
// so pgx prepares each once per connection and caches it.
//
// Every time-dependent statement takes coalesce($1::timestamptz, now()) as
// its clock: NULL in production (the database's clock, the start of the
// transaction), a manual clock's time in tests.
type queueSQL struct {
	// counts reads the counter row without locking it.
	counts string
	// lockItems locks the rows a batch's token operations name, in sequence
	// id order (so that two batches that share rows wait for each other
	// instead of deadlocking), and returns them whole: the batch decides each
	// operation on the locked row and writes the net effect. Only leased
	// rows: every token operation needs a live lease, and a stale token must
	// not lock a pending row (a lease would have to wait for it).
	// Heartbeat, Complete, Fail, Release and QueueTx.Complete read a row
	// it does not return as an unknown token.
	lockItems string
	// promote moves scheduled items whose time has come to pending.
	promote string
	// expired locks leases whose expiry has passed, skipping any locked by
	// another transaction (it is settling them, or sweeping them).
	expired string
	// lease hands the oldest ready items to a batch's lease slots, in slot
	// order; leaseSized does the same within each requester's byte budget.
	lease, leaseSized string
	// claimDedupe takes each new request id of a batch (or one whose window
	// has passed); readDedupe reads the first enqueue of the others.
	claimDedupe, readDedupe, unclaimDedupe string
	// heartbeat, endLease and complete write the net effect of a batch's
	// token operations and expiries on rows locked earlier in it.
	heartbeat, endLease, complete string
	// final is the batch's last statement before COMMIT: it takes the
	// counter row, draws sequence ids and event numbers from it, inserts the
	// new items and the events, and returns the counts after the batch.
	// The event columns are text, written as the dispatcher encoded them:
	// each event's metadata comes as an open JSON object (see
	// changeLog.eventArgs) that it closes with the counts and the new
	// item's sequence id, and a new item's token as one open before its
	// sequence id, which it appends. Its updates of dedupe and dead
	// letter rows are gated on their arrays (a generic plan may scan the
	// table for its first row before it finds the other side empty).
	final string
	// nextDue is the earliest time a scheduled item becomes ready.
	nextDue string
	// bumpSequence moves the next sequence id past restored ids.
	bumpSequence string
	// presentIDs finds which of a set of sequence ids are in the queue.
	presentIDs string
	// restore inserts restored items.
	restore string
	// drain, drainSized lock and delete the oldest pending items.
	drain, drainSized string
	// deadList lists dead letters in dead-letter order; deadLock locks the
	// selected ones (deadLockAll every one), redrive and purge act on them.
	deadList, deadLock, deadLockAll, redrive, purge string
	// events reads the log, eventsBodyless without the items' bodies;
	// lastEvent is the newest event's number; firstEvent the oldest
	// retained one; trimEvents deletes a range.
	events, eventsBodyless, lastEvent, firstEvent, trimEvents string
	// trimDedupe forgets request ids whose window has passed.
	trimDedupe string
	// deadOldest locks the oldest dead letters (at most $2), skipping any
	// another transaction holds; deadExcess those beyond MaxDeadLetters
	// ($2) by the counter row; deadExpired those older than the retention
	// ($2 microseconds), at most $3. purgeDead deletes them.
	deadOldest, deadExcess, deadExpired string
	// deadCount reads the number of dead letters under the counter row's
	// lock, which the transaction then holds to its COMMIT.
	deadCount string
	notify    string
}

// itemColumns are the columns scanned into an itemRow, in its order.
const itemColumns = `sequence_id, state, resource_type, resource_id, partition_key, payload_encoding, body,
	attributes, request_id, attempt, release_count, enqueued_at, not_before, lease_id, leased_at,
	lease_expires_at, owner_peer_id, last_error, last_token_attempt, last_token_lease_id,
	dead_lettered_at, reason, reason_code, item_not_before`

// sizeExpr approximates the JSON size of an item as a drain or a lease batch
// returns it (as the engine's approxPendingJSONSize does): the body as
// base64, the strings, the attributes and the last error, plus 300 bytes of
// field names, times and numbers.
const sizeExpr = `(300 + (coalesce(octet_length(i.body), 0) + 2) / 3 * 4
	+ octet_length(i.resource_type) + octet_length(i.resource_id) + octet_length(i.partition_key)
	+ octet_length(i.payload_encoding) + coalesce(octet_length(i.request_id), 0)
	+ coalesce(octet_length(i.attributes::text), 0) + coalesce(octet_length(i.last_error::text), 0))`

const nowExpr = `coalesce($1::timestamptz, now())`

func prefixed(cols, alias string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = alias + "." + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

// fifoRanked is the ranked CTE of a lease without partition rules: the
// oldest ready items, one index scan of items_ready. cand is materialized
// so that it runs once whatever the plan: run again (a rescan), LIMIT …
// SKIP LOCKED would lock other rows.
const fifoRanked = `cand AS MATERIALIZED (
				SELECT sequence_id FROM {items} WHERE state = 'pending' ORDER BY sequence_id LIMIT $2 FOR UPDATE SKIP LOCKED
			), ranked AS (
				SELECT sequence_id, row_number() OVER (ORDER BY sequence_id) AS rn FROM cand
			)`

// leaseStatements are the lease statements over ranked, a CTE that locks
// the items to lease and numbers them (rn) in the order of the batch's
// slots: they write the leases and return the rows.
// set is more of the leased rows' columns to set (", col = ..."), or "".
func leaseStatements(s *Store, ranked, set string) (lease, leaseSized string) {
	// While leasing is paused (mesh-wide: the flag is on the queue's row)
	// no row is updated. (The planner makes the flag a one-time filter
	// above ranked, which then never runs; were it to run, the rows it
	// locked would be let go at the end of the transaction, as those of a
	// lease that finds nothing are.)
	paused := "(SELECT paused FROM " + s.table("queue_state") + ")"
	// One pass: ranked has its own tables filled in already.
	r := strings.NewReplacer("{ranked}", ranked, "{set}", set, "{items}", s.table("items"), "{paused}", paused, "{now}", nowExpr,
		"{icols}", prefixed(itemColumns, "i"), "{size}", sizeExpr)
	// Each ranked row takes its slot's lease id and peer by subscript
	// (ranked may hold more rows than the $2 slots under partition rules): a
	// join of ranked and the slots is planned as a nested loop (both are
	// estimated at a row or so), which compares every row with every slot.
	lease = r.Replace(`WITH {ranked}
			UPDATE {items} i SET state = 'leased', lease_id = ($3::uuid[])[r.rn], leased_at = {now},
				lease_expires_at = {now} + $5::int8 * interval '1 microsecond', owner_peer_id = ($4::text[])[r.rn],
				last_token_attempt = i.attempt, last_token_lease_id = ($3::uuid[])[r.rn]{set}
			FROM ranked r
			WHERE i.sequence_id = r.sequence_id AND r.rn <= $2 AND NOT {paused}
			RETURNING r.rn, {icols}`)
	leaseSized = r.Replace(`WITH {ranked}, slots AS (
				SELECT * FROM unnest($3::uuid[], $4::text[], $6::int4[], $7::int8[]) WITH ORDINALITY AS s(lease_id, peer, req, budget, rn)
			), sized AS (
				SELECT r.sequence_id, s.lease_id, s.peer, s.rn, s.budget,
					sum({size}) OVER (PARTITION BY s.req ORDER BY s.rn) AS cum,
					row_number() OVER (PARTITION BY s.req ORDER BY s.rn) AS nth
				FROM ranked r JOIN slots s USING (rn) JOIN {items} i ON i.sequence_id = r.sequence_id
			), chosen AS (
				SELECT * FROM sized WHERE budget <= 0 OR nth = 1 OR cum <= budget
			)
			UPDATE {items} i SET state = 'leased', lease_id = c.lease_id, leased_at = {now},
				lease_expires_at = {now} + $5::int8 * interval '1 microsecond', owner_peer_id = c.peer,
				last_token_attempt = i.attempt, last_token_lease_id = c.lease_id{set}
			FROM chosen c
			WHERE i.sequence_id = c.sequence_id AND NOT {paused}
			RETURNING c.rn, {icols}`)
	return lease, leaseSized
}

func newQueueSQL(s *Store) queueSQL {
	items, qs, ev, dd := s.table("items"), s.table("queue_state"), s.table("events"), s.table("dedupe")
	r := strings.NewReplacer("{items}", items, "{queue_state}", qs, "{events}", ev, "{dedupe}", dd,
		"{now}", nowExpr, "{cols}", itemColumns, "{icols}", prefixed(itemColumns, "i"), "{size}", sizeExpr)
	lease, leaseSized := leaseStatements(s, strings.NewReplacer("{items}", items).Replace(fifoRanked), "")
	return queueSQL{
		counts: r.Replace(`SELECT {now}, pending_count, delayed_count, active_count, dead_letter_count, next_event_sequence, paused FROM {queue_state}`),
		// The state is tested through coalesce (state is never NULL), which
		// no partial index's predicate is proved from: the rows are found
		// by key alone. Tested plainly, a plan may AND a scan of the whole
		// index of leased rows (of dead ones) with the key lookups, and
		// read every lease in the queue on every commit. This relies on the
		// planner not folding coalesce of a NOT NULL column (PostgreSQL
		// 13–18 do not); TestLockItemsPlanProbesByKey fails where it does.
		lockItems: r.Replace(`SELECT coalesce(lease_expires_at > {now}, false), {cols} FROM {items}
			WHERE sequence_id = ANY($2::int8[]) AND coalesce(state, '') = 'leased' ORDER BY sequence_id FOR UPDATE`),
		// No SKIP LOCKED here: a lease right after an item's delay passed
		// must find it even while another transaction is promoting it, so
		// this waits for that one (and then finds the row promoted). A
		// batch runs it before it locks any other row, so the wait cannot
		// close a cycle with the token rows it locks after. The outer
		// conditions repeat the inner ones because a row this waited for is
		// tested again in its newest version, and only by them: that version
		// may be the item leased and failed again since, delayed anew.
		promote: r.Replace(`UPDATE {items} i SET state = 'pending', not_before = NULL
			WHERE i.sequence_id IN (SELECT sequence_id FROM {items} WHERE state = 'scheduled' AND not_before <= {now}
				ORDER BY not_before, sequence_id LIMIT $2)
				AND i.state = 'scheduled' AND i.not_before <= {now}
			RETURNING i.sequence_id, i.partition_key`),
		expired: r.Replace(`SELECT {cols} FROM {items}
			WHERE state = 'leased' AND lease_expires_at <= {now}
			ORDER BY lease_expires_at, sequence_id LIMIT $2 FOR UPDATE SKIP LOCKED`),
		lease: lease, leaseSized: leaseSized,
		// Rows go in in request id order, the order of the index entries
		// they lock, so two batches that share request ids wait for each
		// other at the first shared one instead of deadlocking. The
		// placeholder sequence id 0 is replaced in the same transaction by
		// the final statement; nobody else ever sees it.
		claimDedupe: r.Replace(`INSERT INTO {dedupe} AS d (request_id, sequence_id, created_at, expires_at)
			SELECT req, 0, {now}, {now} + $3::int8 * interval '1 microsecond' FROM unnest($2::text[]) AS req ORDER BY req
			ON CONFLICT (request_id) DO UPDATE SET sequence_id = 0, result = NULL,
				created_at = excluded.created_at, expires_at = excluded.expires_at
				WHERE d.expires_at <= excluded.created_at
			RETURNING request_id`),
		readDedupe:    r.Replace(`SELECT request_id, sequence_id FROM {dedupe} WHERE request_id = ANY($1::text[]) AND sequence_id <> 0`),
		unclaimDedupe: r.Replace(`DELETE FROM {dedupe} WHERE request_id = ANY($1::text[]) AND sequence_id = 0`),
		heartbeat: r.Replace(`UPDATE {items} SET lease_expires_at = {now} + $3::int8 * interval '1 microsecond'
			WHERE sequence_id = ANY($2::int8[])`),
		endLease: r.Replace(`UPDATE {items} i SET state = x.state, attempt = x.attempt, release_count = x.releases,
				last_error = x.last_error::jsonb,
				not_before = CASE WHEN x.state = 'scheduled' THEN {now} + x.delay_us * interval '1 microsecond' END,
				lease_id = NULL, leased_at = NULL, lease_expires_at = NULL, owner_peer_id = NULL, leased_partition = NULL,
				dead_lettered_at = CASE WHEN x.state = 'dead' THEN {now} END,
				reason = x.reason, reason_code = x.reason_code
			FROM unnest($2::int8[], $3::text[], $4::int4[], $5::int4[], $6::text[], $7::int8[], $8::text[], $9::text[])
				AS x(seq, state, attempt, releases, last_error, delay_us, reason, reason_code)
			WHERE i.sequence_id = x.seq`),
		complete: r.Replace(`DELETE FROM {items} WHERE sequence_id = ANY($1::int8[])`),
		final: r.Replace(`WITH c AS (
				UPDATE {queue_state} SET
					next_sequence_id = next_sequence_id + $2::int8,
					next_event_sequence = next_event_sequence + $3::int8,
					pending_count = pending_count + $4::int8,
					delayed_count = delayed_count + $5::int8,
					active_count = active_count + $6::int8,
					dead_letter_count = dead_letter_count + $7::int8,
					events_trimmed_through = greatest(events_trimmed_through, $8::int8),
					updated_at = {now}
				WHERE id -- the one row, by its key: the writer plans this statement without sequential scans
				RETURNING next_sequence_id - $2::int8 AS first_seq, next_event_sequence - $3::int8 AS first_ev,
					pending_count, delayed_count, active_count, dead_letter_count, paused, {now} AS ts
			), new_items AS (
				INSERT INTO {items} (sequence_id, state, resource_type, resource_id, partition_key, payload_encoding,
					body, attributes, request_id, attempt, enqueued_at,
					lease_id, leased_at, lease_expires_at, owner_peer_id, last_token_attempt, last_token_lease_id,
					item_not_before, not_before)
				SELECT c.first_seq + n.ord - 1,
					CASE WHEN n.lid IS NOT NULL THEN 'leased' WHEN n.sched IS NOT NULL THEN 'scheduled' ELSE 'pending' END,
					n.rt, n.rid, n.pk, n.enc, n.body, n.attrs::jsonb, n.req, 1, c.ts,
					n.lid, CASE WHEN n.lid IS NOT NULL THEN c.ts END,
					CASE WHEN n.lid IS NOT NULL THEN c.ts + $32::int8 * interval '1 microsecond' END,
					n.owner, CASE WHEN n.lid IS NOT NULL THEN 1 END, n.lid, n.nb, n.sched
				FROM c, unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], $14::text[], $15::text[],
						$30::uuid[], $31::text[], $33::timestamptz[], $34::timestamptz[])
					WITH ORDINALITY AS n(rt, rid, pk, enc, body, attrs, req, lid, owner, nb, sched, ord)
			), dd AS (
				UPDATE {dedupe} d SET sequence_id = c.first_seq + x.ord - 1
				FROM c, unnest($16::text[], $17::int8[]) AS x(req, ord) WHERE d.request_id = x.req
					AND cardinality($16::text[]) > 0
			), dl AS (
				UPDATE {items} i SET dead_event = c.first_ev + x.ord - 1
				FROM c, unnest($18::int8[], $19::int8[]) AS x(seq, ord) WHERE i.sequence_id = x.seq
					AND cardinality($18::int8[]) > 0
			), ev AS (
				INSERT INTO {events} (sequence_number, event_type, ts, ownership, peer_id, item_sequence_id, payload, body, error, metadata)
				SELECT c.first_ev + e.ord - 1, e.typ, c.ts,
					CASE WHEN e.nord IS NULL OR e.own IS NULL THEN e.own
						ELSE e.own || (c.first_seq + e.nord - 1) || '}' END,
					e.peer, coalesce(e.iseq, c.first_seq + e.nord - 1),
					e.payload, e.body, e.err,
					(e.meta || '"queue.pending":"' || (c.pending_count + c.delayed_count - $4::int8 - $5::int8 + e.dp)
						|| '","queue.active":"' || (c.active_count - $6::int8 + e.da)
						|| CASE WHEN e.nord IS NULL THEN '"}'
							ELSE '","sequenceId":"' || (c.first_seq + e.nord - 1) || '"}' END)
				FROM c, unnest($20::text[], $21::text[], $22::text[], $23::int8[], $24::text[], $25::text[], $26::text[],
						$27::int8[], $28::int8[], $29::int8[], $35::bytea[])
					WITH ORDINALITY AS e(typ, own, peer, iseq, payload, err, meta, dp, da, nord, body, ord)
			)
			SELECT first_seq, first_ev, pending_count, delayed_count, active_count, dead_letter_count, paused, ts FROM c`),
		nextDue:      r.Replace(`SELECT min(not_before) FROM {items} WHERE state = 'scheduled'`),
		bumpSequence: r.Replace(`UPDATE {queue_state} SET next_sequence_id = greatest(next_sequence_id, $1::int8)`),
		presentIDs:   r.Replace(`SELECT sequence_id FROM {items} WHERE sequence_id = ANY($1::int8[]) ORDER BY sequence_id LIMIT 1`),
		restore: r.Replace(`INSERT INTO {items} (sequence_id, state, resource_type, resource_id, partition_key, payload_encoding,
				body, attributes, request_id, attempt, release_count, enqueued_at, not_before, last_error,
				last_token_attempt, last_token_lease_id, item_not_before)
			SELECT x.seq, CASE WHEN x.ready_at > {now} THEN 'scheduled' ELSE 'pending' END, x.rt, x.rid, x.pk, x.enc,
				x.body, x.attrs::jsonb, x.req, x.attempt, x.releases, coalesce(x.enq, {now}),
				CASE WHEN x.ready_at > {now} THEN x.ready_at END, x.last_error::jsonb, x.tok_attempt, x.tok_lease, x.nb
			FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[], $9::text[],
				$10::int4[], $11::int4[], $12::timestamptz[], $13::timestamptz[], $14::text[], $15::int4[], $16::uuid[],
				$17::timestamptz[])
				AS x(seq, rt, rid, pk, enc, body, attrs, req, attempt, releases, enq, ready_at, last_error, tok_attempt, tok_lease, nb)
			ORDER BY x.seq
			RETURNING ` + itemColumns),
		drain: r.Replace(`WITH d AS (
				SELECT sequence_id FROM {items} WHERE state IN ('pending', 'scheduled')
				ORDER BY sequence_id LIMIT $1 FOR UPDATE SKIP LOCKED
			)
			DELETE FROM {items} i USING d WHERE i.sequence_id = d.sequence_id
			RETURNING {icols}`),
		drainSized: r.Replace(`WITH d AS (
				SELECT sequence_id FROM {items} WHERE state IN ('pending', 'scheduled')
				ORDER BY sequence_id LIMIT $1 FOR UPDATE SKIP LOCKED
			), sized AS (
				SELECT i.sequence_id, sum({size}) OVER (ORDER BY i.sequence_id) AS cum,
					row_number() OVER (ORDER BY i.sequence_id) AS nth
				FROM d JOIN {items} i USING (sequence_id)
			)
			DELETE FROM {items} i USING sized s
			WHERE i.sequence_id = s.sequence_id AND (s.nth = 1 OR s.cum <= $2)
			RETURNING {icols}`),
		deadList: r.Replace(`SELECT {cols} FROM {items} WHERE state = 'dead'
			ORDER BY dead_lettered_at, dead_event, sequence_id LIMIT $1`),
		deadLock: r.Replace(`SELECT {cols} FROM {items} WHERE coalesce(state, '') = 'dead' AND sequence_id = ANY($1::int8[])
			ORDER BY sequence_id FOR UPDATE`),
		deadLockAll: r.Replace(`SELECT {cols} FROM {items} WHERE state = 'dead' ORDER BY sequence_id FOR UPDATE`),
		redrive: r.Replace(`UPDATE {items} SET state = 'pending', attempt = 1, release_count = 0, not_before = NULL,
				dead_lettered_at = NULL, reason = NULL, reason_code = NULL, dead_event = NULL
			WHERE sequence_id = ANY($1::int8[])`),
		purge: r.Replace(`DELETE FROM {items} WHERE sequence_id = ANY($1::int8[])`),
		events: r.Replace(`SELECT sequence_number, event_type, ts, ownership, peer_id, payload, error, metadata, body
			FROM {events} WHERE sequence_number > $1 ORDER BY sequence_number LIMIT $2`),
		eventsBodyless: r.Replace(`SELECT sequence_number, event_type, ts, ownership, peer_id, payload, error, metadata, NULL::bytea
			FROM {events} WHERE sequence_number > $1 ORDER BY sequence_number LIMIT $2`),
		lastEvent:  r.Replace(`SELECT next_event_sequence - 1, events_trimmed_through FROM {queue_state}`),
		firstEvent: r.Replace(`SELECT coalesce(min(sequence_number), 0) FROM {events}`),
		trimEvents: r.Replace(`DELETE FROM {events} WHERE sequence_number > $1 AND sequence_number <= $2`),
		trimDedupe: r.Replace(`DELETE FROM {dedupe} WHERE request_id IN (
				SELECT request_id FROM {dedupe} WHERE expires_at <= {now} ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`),
		notify:    `SELECT pg_notify($1, $2)`,
		deadCount: r.Replace(`SELECT dead_letter_count FROM {queue_state} FOR UPDATE`),
		deadOldest: r.Replace(`SELECT {cols} FROM {items} WHERE state = 'dead'
			ORDER BY dead_lettered_at, dead_event, sequence_id LIMIT $1 FOR UPDATE SKIP LOCKED`),
		deadExcess: r.Replace(`SELECT {cols} FROM {items} WHERE state = 'dead'
			ORDER BY dead_lettered_at, dead_event, sequence_id
			LIMIT least((SELECT greatest(dead_letter_count - $1::int8, 0) FROM {queue_state}), $2::int8) FOR UPDATE SKIP LOCKED`),
		deadExpired: r.Replace(`SELECT {cols} FROM {items} WHERE state = 'dead'
				AND dead_lettered_at <= {now} - $2::int8 * interval '1 microsecond'
			ORDER BY dead_lettered_at, dead_event, sequence_id LIMIT $3 FOR UPDATE SKIP LOCKED`),
	}
}
