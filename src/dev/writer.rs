//! The demo writer: every interval it makes one plain SQL write on the demo
//! schema, cycling through the kinds of change the default routes turn
//! into events. It is what a backend would do; rowcast sees only the rows.

use std::time::Duration;

use deadpool_postgres::Pool;
use rand::Rng;

use rowcast::shutdown::Shutdown;

use super::{client, pause};

/// One demo write.
const ACTIONS: &[&str] = &[
    "UPDATE public.content SET title = 'The Lighthouse, part ' || (floor(random() * 100))::int, updated_at = now() WHERE id = 1",
    "INSERT INTO public.content_views (content_id, user_id) VALUES (1, 2)",
    "INSERT INTO public.messages (sender_id, recipient_id, body) VALUES (1, 2, 'Are you coming to the reading?')",
    "INSERT INTO public.content_ratings (content_id, user_id, rating) VALUES (1, 2, 1 + floor(random() * 5)::int)
     ON CONFLICT (content_id, user_id) DO UPDATE SET rating = excluded.rating, updated_at = now()",
    "INSERT INTO public.notifications (user_id, kind, body) VALUES (2, 'reminder', 'The reading starts in a week')",
    "UPDATE public.notifications SET read_at = now() WHERE id = (SELECT min(id) FROM public.notifications WHERE read_at IS NULL)",
    "UPDATE public.users SET bio = 'Writes serials (' || to_char(now(), 'HH24:MI:SS') || ')' WHERE id = 1",
    "INSERT INTO public.chapters (content_id, title, body, position) VALUES (1, 'Another chapter', '...', 2)",
    "DELETE FROM public.chapters WHERE id = (SELECT max(id) FROM public.chapters WHERE id > 1)",
    "INSERT INTO public.ad_views (ad_id, advertiser_id, viewer_id) VALUES (1, 4, 2)",
    "UPDATE public.media SET caption = 'Morning ' || (floor(random() * 10))::int, updated_at = now() WHERE id = 1",
    "INSERT INTO public.diary_entries (diary_id, body) VALUES (1, 'Read two chapters today.')",
    "INSERT INTO public.payments (user_id, amount_cents, status, card_token) VALUES (2, 499, 'completed', 'tok_demo_secret')",
    "SELECT realtime.publish(ARRAY['broadcast'], 'announcement', jsonb_build_object('title', 'Maintenance at midnight'))",
];

/// Writes until shutdown.
pub(super) async fn run(pool: Pool, interval: Duration, shutdown: Shutdown) {
    let mut next = 0usize;
    while pause(interval, &shutdown).await {
        let Some(client) = client(&pool).await else {
            continue;
        };
        let jitter = rand::rng().random_range(0..3);
        let action = ACTIONS[(next + jitter) % ACTIONS.len()];
        next = next.wrapping_add(1);
        if let Err(e) = client.batch_execute(action).await {
            tracing::debug!(error = %rowcast::describe_pg_error(&e), "demo write failed");
        }
    }
}
