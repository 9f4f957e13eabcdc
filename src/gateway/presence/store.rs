//! Presence in the database, one transaction per step, each user's steps
//! serialized by an advisory lock on the user: a node's lease
//! (`realtime.nodes`), the users it has connections of
//! (`realtime.node_users`), and who was announced online
//! (`realtime.online`). A transition is published with `realtime.publish`
//! in the transaction that records it, and only if the record changed, so
//! it is announced exactly once, whichever nodes race.

use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use serde_json::{json, Value};

/// How long a node's lease lasts without renewal.
pub(super) const LEASE: Duration = Duration::from_secs(10);

use crate::db::DbError;

/// A failed step.
type StepError = DbError;

/// Registers this node, or renews its lease; false when the node had been
/// given up for dead (its users must be recorded again).
pub(super) async fn renew(pool: &Pool, node: &str) -> Result<bool, StepError> {
    let client = pool.get().await?;
    let renewed = client
        .execute(
            "UPDATE realtime.nodes SET lease_until = now() + make_interval(secs => $2)
             WHERE node = $1 AND lease_until > now()",
            &[&node, &LEASE.as_secs_f64()],
        )
        .await?;
    if renewed == 1 {
        return Ok(true);
    }
    client
        .execute(
            "INSERT INTO realtime.nodes (node, lease_until) VALUES ($1, now() + make_interval(secs => $2))
             ON CONFLICT (node) DO UPDATE SET lease_until = excluded.lease_until",
            &[&node, &LEASE.as_secs_f64()],
        )
        .await?;
    Ok(false)
}

/// This node is gone (a clean stop): its row and its users' rows go.
pub(super) async fn deregister(pool: &Pool, node: &str) -> Result<(), StepError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("DELETE FROM realtime.node_users WHERE node = $1", &[&node])
        .await?;
    tx.execute("DELETE FROM realtime.nodes WHERE node = $1", &[&node])
        .await?;
    tx.commit().await.map_err(DbError::from)
}

/// `user` has a connection on `node`; announces `online` if they were not.
pub(super) async fn opened(pool: &Pool, node: &str, user: &str) -> Result<(), StepError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_user(&tx, user).await?;
    tx.execute(
        "INSERT INTO realtime.node_users (node, sub) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&node, &user],
    )
    .await?;
    let announced = tx
        .execute(
            "INSERT INTO realtime.online (sub) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&user],
        )
        .await?;
    if announced == 1 {
        publish(&tx, user, "online").await?;
    }
    tx.commit().await.map_err(DbError::from)
}

/// `user` has no connection left on `node`; announces `offline` if no live
/// node has one either.
pub(super) async fn closed(pool: &Pool, node: &str, user: &str) -> Result<(), StepError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_user(&tx, user).await?;
    tx.execute(
        "DELETE FROM realtime.node_users WHERE node = $1 AND sub = $2",
        &[&node, &user],
    )
    .await?;
    settle(&tx, user).await?;
    tx.commit().await.map_err(DbError::from)
}

/// Users announced online whom no live node has a connection of (their
/// node died, or a relay before node leases left them): each goes offline.
pub(super) async fn sweep(pool: &Pool) -> Result<(), StepError> {
    let client = pool.get().await?;
    client
        .execute(
            "DELETE FROM realtime.node_users u WHERE NOT EXISTS (
                 SELECT 1 FROM realtime.nodes n WHERE n.node = u.node AND n.lease_until > now())",
            &[],
        )
        .await?;
    client
        .execute(
            "DELETE FROM realtime.nodes WHERE lease_until < now() - interval '1 hour'",
            &[],
        )
        .await?;
    let orphans: Vec<String> = client
        .query(
            "SELECT o.sub FROM realtime.online o WHERE NOT EXISTS (
                 SELECT 1 FROM realtime.node_users u JOIN realtime.nodes n USING (node)
                 WHERE u.sub = o.sub AND n.lease_until > now())
             ORDER BY o.since, o.sub LIMIT 1000",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(client);
    for user in orphans {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        lock_user(&tx, &user).await?;
        settle(&tx, &user).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Takes `user`'s presence lock for the rest of the transaction.
async fn lock_user(tx: &Transaction<'_>, user: &str) -> Result<(), StepError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('rowcast presence'), hashtext($1))",
        &[&user],
    )
    .await?;
    Ok(())
}

/// Announces `offline` if `user` was announced online and no live node has
/// a connection of theirs.
async fn settle(tx: &Transaction<'_>, user: &str) -> Result<(), StepError> {
    let gone = tx
        .execute(
            "DELETE FROM realtime.online o WHERE o.sub = $1 AND NOT EXISTS (
                 SELECT 1 FROM realtime.node_users u JOIN realtime.nodes n USING (node)
                 WHERE u.sub = $1 AND n.lease_until > now())",
            &[&user],
        )
        .await?;
    if gone == 1 {
        publish(tx, user, "offline").await?;
    }
    Ok(())
}

/// `user-status-changed` to the rooms `realtime.presence` names.
async fn publish(tx: &Transaction<'_>, user: &str, status: &str) -> Result<(), StepError> {
    let rooms: Vec<String> = tx
        .query_one("SELECT realtime.presence($1, $2)", &[&user, &status])
        .await?
        .get::<_, Option<Vec<String>>>(0)
        .unwrap_or_default();
    if rooms.is_empty() {
        return Ok(());
    }
    let user_id = user
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(user));
    let data = json!({"user_id": user_id, "status": status});
    tx.execute(
        "SELECT realtime.publish($1, 'user-status-changed', $2)",
        &[&rooms, &data],
    )
    .await?;
    Ok(())
}
