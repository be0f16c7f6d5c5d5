//! Usage per tenant, day and metric: incremented in the transaction of the write
//! that reports it, read back aggregated.

use crate::{DbError, TenantTx};
use chrono::NaiveDate;
use serde::Serialize;
use sqlx::types::BigDecimal;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, utoipa::ToSchema)]
pub struct UsageRow {
    pub day: NaiveDate,
    pub metric: String,
    /// Decimal as text, so costs keep their precision in JSON.
    pub value: String,
}

/// Adds `amount` to today's `metric` for the current tenant.
pub async fn add(tx: &mut TenantTx, metric: &str, amount: &BigDecimal) -> Result<(), DbError> {
    let tenant = tx.tenant_id().as_uuid();
    sqlx::query(
        "INSERT INTO usage_metrics (tenant_id, day, metric, value) VALUES ($1, current_date, $2, $3)
         ON CONFLICT (tenant_id, day, metric)
         DO UPDATE SET value = usage_metrics.value + EXCLUDED.value, updated_at = now()",
    )
    .bind(tenant)
    .bind(metric)
    .bind(amount)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Per day and metric between `from` and `to` (inclusive), oldest first.
pub async fn list(
    tx: &mut TenantTx,
    from: NaiveDate,
    to: NaiveDate,
    metric: Option<&str>,
) -> Result<Vec<UsageRow>, DbError> {
    let tenant = tx.tenant_id().as_uuid();
    Ok(sqlx::query_as(
        "SELECT day, metric, value::text AS value FROM usage_metrics
          WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 AND ($4::text IS NULL OR metric = $4)
          ORDER BY day, metric",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(metric)
    .fetch_all(tx.conn())
    .await?)
}
