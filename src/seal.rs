//! `framegate events seal`: the one-off that seals the personal data of rows written before
//! encryption in place (`framegate_commands::pii::in_place`, ADR 0043), with a report an
//! operator can act on.

use anyhow::Context as _;
use sqlx::PgPool;

pub async fn run(pool: &PgPool, batch: i64) -> anyhow::Result<()> {
    // Migration 0029 is what lets the pass through the append-only trigger.
    framegate_commands::db::migrate(pool)
        .await
        .context("migrations failed")?;
    let pii = framegate_commands::pii::current();
    let report = pii
        .seal_in_place(pool, batch)
        .await
        .context("sealing rows in place failed (run it again: it resumes)")?;
    if report.index_dropped {
        println!("dropped events_user_email_key (email claims cover every user)");
    }
    println!(
        "{} rows sealed, {} rows of erased users now read [erased], in {} transactions",
        report.sealed, report.erased, report.batches
    );
    if report.left_in_clear > 0 {
        println!(
            "{} rows keep client_ip/user_agent in clear: their metadata belongs to no user \
             (system events such as Stripe's webhooks), as new rows of that kind do",
            report.left_in_clear
        );
    }
    println!(
        "The old row versions stay in the table's pages until VACUUM reclaims them (VACUUM FULL \
         events rewrites the table, under an exclusive lock), and in WAL archives and backups \
         taken before now until they expire."
    );
    Ok(())
}
