-- Deliveries beyond the open socket (webhooks, Web Push). Each sink reads
-- the outbox through a durable cursor: the last seq it is done with. A
-- crash resumes after it, so delivery is at least once, and the event's
-- seq (a webhook's `webhook-id`) lets a receiver drop a repeat.

CREATE TABLE IF NOT EXISTS realtime.sink_cursors (
    sink       text        PRIMARY KEY,   -- `webhook:<name>`, `push`
    seq        bigint      NOT NULL,      -- every event up to it is done
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events a webhook gave up on after its bounded attempts, with what the
-- last attempt got. The webhook moved on; an operator can re-send them.
CREATE TABLE IF NOT EXISTS realtime.webhook_failures (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook     text        NOT NULL,
    seq         bigint      NOT NULL,
    event       text        NOT NULL,
    webhook_id  text        NOT NULL,
    attempts    integer     NOT NULL,
    last_status integer,                 -- NULL when no answer came
    last_error  text        NOT NULL,
    body        json        NOT NULL,    -- the frame that was POSTed
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_failures_webhook ON realtime.webhook_failures (webhook, seq);

-- Browsers' Web Push subscriptions, per user. An endpoint is unique: a
-- second registration of it changes nothing, a push service's 404 or 410
-- removes it.
CREATE TABLE IF NOT EXISTS realtime.push_subscriptions (
    endpoint   text        PRIMARY KEY,
    sub        text        NOT NULL,
    p256dh     text        NOT NULL,
    auth       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS push_subscriptions_sub ON realtime.push_subscriptions (sub);

REVOKE ALL ON realtime.sink_cursors, realtime.webhook_failures, realtime.push_subscriptions
    FROM PUBLIC;
