-- The activity log, the last known state of every item, and cached names.

-- One entry per stored event, written by the enrichment worker.
CREATE TABLE activity (
    id INTEGER PRIMARY KEY,
    portal_id INTEGER NOT NULL REFERENCES portals (id) ON DELETE CASCADE,
    event_id INTEGER NOT NULL UNIQUE,
    -- add | update | delete
    action TEXT NOT NULL,
    entity_type_id INTEGER NOT NULL,
    type_title TEXT,
    item_id INTEGER NOT NULL,
    item_title TEXT,
    -- The title in lower case, for search.
    title_search TEXT,
    -- Who made the change: the user of the event's token; NULL for robots and workflows.
    user_id INTEGER,
    user_name TEXT,
    occurred_at INTEGER NOT NULL,
    -- JSON list of {"field","label","old","new"}; names already resolved.
    changes TEXT NOT NULL,
    -- recorded | first_seen | collapsed | deleted | inaccessible
    outcome TEXT NOT NULL
);

CREATE INDEX activity_by_portal ON activity (portal_id, id);
CREATE INDEX activity_by_type ON activity (portal_id, entity_type_id, id);
CREATE INDEX activity_by_item ON activity (portal_id, entity_type_id, item_id, id);
CREATE INDEX activity_by_user ON activity (portal_id, user_id, id);
CREATE INDEX activity_by_time ON activity (portal_id, occurred_at, id);

-- The item as last fetched: the base of the next difference.
CREATE TABLE item_snapshots (
    portal_id INTEGER NOT NULL REFERENCES portals (id) ON DELETE CASCADE,
    entity_type_id INTEGER NOT NULL,
    item_id INTEGER NOT NULL,
    fields TEXT NOT NULL,
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (portal_id, entity_type_id, item_id)
);

-- Type titles, user names and stage names per portal, each with an expiry.
CREATE TABLE names (
    portal_id INTEGER NOT NULL REFERENCES portals (id) ON DELETE CASCADE,
    -- type | user | stage
    kind TEXT NOT NULL,
    name_key TEXT NOT NULL,
    name TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (portal_id, kind, name_key)
);
