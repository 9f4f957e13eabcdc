-- Presence across relay nodes. Each node registers itself with a lease it
-- renews every few seconds; a node whose lease ran out is dead and its
-- connections no longer count. A user is online while some live node has a
-- connection of theirs (realtime.node_users); realtime.online holds who
-- has been announced online, so each transition is announced exactly once.

CREATE TABLE IF NOT EXISTS realtime.nodes (
    node        text        PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS realtime.node_users (
    node text NOT NULL,
    sub  text NOT NULL,
    PRIMARY KEY (node, sub)
);
CREATE INDEX IF NOT EXISTS node_users_sub ON realtime.node_users (sub);

REVOKE ALL ON realtime.nodes, realtime.node_users FROM PUBLIC;
