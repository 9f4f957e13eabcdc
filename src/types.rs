//! `rowcast types`: reads the column types of the routed tables from the
//! database and prints the TypeScript declarations that
//! [`rowcast::route::typescript`] makes of them.

use std::collections::HashMap;

use rowcast::config::{ConfigError, DatabaseConfig};
use rowcast::typescript::{self, ColumnType, ColumnTypes};
use rowcast::{Catalog, Router};

use crate::cli::TypesArgs;

/// Each column of the given tables with its `format_type()` name (enums
/// as `text`, the form they reach JSON in) and whether it may be NULL.
const COLUMNS: &str = "
    SELECT n.nspname || '.' || c.relname, a.attname,
           CASE WHEN t.typtype = 'e' THEN 'text' ELSE format_type(a.atttypid, a.atttypmod) END,
           NOT a.attnotnull
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY($1)
    ORDER BY a.attnum";

/// Prints the declarations to stdout.
pub async fn run(args: TypesArgs) -> anyhow::Result<()> {
    let router = match args.routes.as_deref().filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => Router::from_path(path)?,
        None => Router::builtin()?,
    };
    let types = column_types(&database(args.database_url)?, &router).await?;
    let catalog: Catalog = types
        .iter()
        .map(|(table, columns)| (table.clone(), columns.keys().cloned().collect()))
        .collect();
    router.check(&catalog)?;
    print!("{}", typescript::declarations(&router, &types));
    Ok(())
}

fn database(url: Option<String>) -> Result<DatabaseConfig, ConfigError> {
    DatabaseConfig::from_url(url.as_deref().unwrap_or_default()).map_err(ConfigError::from)
}

async fn column_types(database: &DatabaseConfig, router: &Router) -> anyhow::Result<ColumnTypes> {
    let target = rowcast::describe(&database.pg);
    let pool = rowcast::pool_of(database, 1, "rowcast types")?;
    let client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("database {target}: {e}"))?;
    let tables: Vec<String> = router.tables().map(|t| t.qualified()).collect();
    let rows = client
        .query(COLUMNS, &[&tables])
        .await
        .map_err(|e| anyhow::anyhow!("database {target}: {}", rowcast::describe_pg_error(&e)))?;
    let mut types: ColumnTypes = HashMap::new();
    for row in rows {
        let column = ColumnType {
            sql: row.get(2),
            nullable: row.get(3),
        };
        types
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1), column);
    }
    Ok(types)
}
