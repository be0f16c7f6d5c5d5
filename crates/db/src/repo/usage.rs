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

/// Adds each `(metric, amount)` (amounts as decimal text) to today's totals for
/// the current tenant, in one statement. Rows are locked in metric order, so two
/// writers adding to the same metrics cannot deadlock.
pub async fn add_many(tx: &mut TenantTx, amounts: &[(&str, String)]) -> Result<(), DbError> {
    let tenant = tx.tenant_id().as_uuid();
    let mut sorted: Vec<&(&str, String)> = amounts.iter().collect();
    sorted.sort_by_key(|(metric, _)| *metric);
    let metrics: Vec<&str> = sorted.iter().map(|(m, _)| *m).collect();
    let values: Vec<&str> = sorted.iter().map(|(_, v)| v.as_str()).collect();
    sqlx::query(
        "INSERT INTO usage_metrics (tenant_id, day, metric, value)
         SELECT $1, current_date, m, v::numeric FROM unnest($2::text[], $3::text[]) AS u(m, v)
         ON CONFLICT (tenant_id, day, metric)
         DO UPDATE SET value = usage_metrics.value + EXCLUDED.value, updated_at = now()",
    )
    .bind(tenant)
    .bind(&metrics)
    .bind(&values)
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
