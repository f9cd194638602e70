-- Version 2: what several replicas share beyond the state itself (control/replication.py, control/rollout/).
-- leases: singleton work (roll-outs) is run by the replica holding the lease, until `until` (epoch seconds).
-- replica_popularity: each replica's own decaying counters; every replica merges the others' (issue 14).
-- bundles: a roll-out's firmware bundle, so whichever replica leads can upload it to the boxes.
-- rollout_aborts: an abort asked of any replica, carried out by the leader between steps.

CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until DOUBLE PRECISION NOT NULL);
CREATE TABLE replica_popularity (replica TEXT PRIMARY KEY, time DOUBLE PRECISION NOT NULL, data TEXT NOT NULL);
CREATE TABLE bundles (sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE rollout_aborts (id TEXT PRIMARY KEY, operator TEXT NOT NULL, time DOUBLE PRECISION NOT NULL);
