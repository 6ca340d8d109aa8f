-- Portals that installed the app, and the events they deliver.
-- Times are unix seconds; flags and states are text or integers so that the same queries run on
-- SQLite and PostgreSQL.

CREATE TABLE portals (
    id INTEGER PRIMARY KEY,
    -- The platform's stable id of the portal; the domain can change.
    member_id TEXT NOT NULL UNIQUE,
    domain TEXT NOT NULL,
    client_endpoint TEXT NOT NULL,
    server_endpoint TEXT NOT NULL,
    -- installing | active | needs_reinstall | payment_required | removed
    status TEXT NOT NULL,
    status_reason TEXT,
    lang TEXT NOT NULL DEFAULT 'en',
    -- Tokens sealed with the operator's key (never plaintext).
    application_token BLOB,
    access_token BLOB,
    refresh_token BLOB,
    access_expires_at INTEGER,
    -- Bumped on every write of the token chain: a refresh commits only if it still matches.
    chain_version INTEGER NOT NULL DEFAULT 0,
    -- Who holds the right to refresh the chain, and until when.
    refresh_owner TEXT,
    refresh_lease_until INTEGER,
    last_refresh_at INTEGER,
    -- The portal's REST budget shared by every instance: a leaky bucket's level and when it
    -- was last drained (unix milliseconds).
    budget_level REAL NOT NULL DEFAULT 0,
    budget_at INTEGER NOT NULL DEFAULT 0,
    last_rest_at INTEGER,
    installed_at INTEGER,
    removed_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    portal_id INTEGER NOT NULL REFERENCES portals (id) ON DELETE CASCADE,
    -- add | update | delete
    action TEXT NOT NULL,
    entity_type_id INTEGER NOT NULL,
    item_id INTEGER NOT NULL,
    -- The user whose token came with the event; NULL for robots and workflows.
    user_id INTEGER,
    event_ts INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    -- Identifies a repeated delivery of the same event. Not unique: two real changes can say
    -- the same; enrichment drops a repeat only when it changed nothing.
    dedup_key TEXT NOT NULL,
    -- pending | done | failed
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Unix milliseconds: retries and leases need finer steps than seconds.
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until INTEGER,
    last_error TEXT
);

CREATE INDEX events_by_portal ON events (portal_id, id);
CREATE INDEX events_by_key ON events (portal_id, dedup_key);
-- Only waiting events are searched by these, and there are few of them at any time: partial
-- indexes stay small however long the history grows.
CREATE INDEX events_due ON events (id) WHERE state = 'pending';
CREATE INDEX events_waiting ON events (portal_id) WHERE state = 'pending';
CREATE INDEX events_by_item ON events (portal_id, entity_type_id, item_id) WHERE state = 'pending';
