//! A PostgreSQL sink for `streamwal::sink`, with the synchronous `postgres`
//! client: a batch's rows and its marker row go into one transaction that
//! is pre-committed with `PREPARE TRANSACTION 'streamwal-<query>-<batch>'`
//! and committed with `COMMIT PREPARED`; the README's recipe sketches it.
//!
//! Tables (created by [`PgSink::connect`] if missing):
//! - `<table>(query text, batch bigint, id bigint, n bigint)`: the output;
//! - `streamwal_batches(query text, batch bigint, primary key (query, batch))`:
//!   one marker per committed batch, written in the batch's transaction, so
//!   that a commit after a crash tells "committed already" from "lost".
//!
//! The server needs `max_prepared_transactions > 0`.

use postgres::error::SqlState;
use postgres::{Client, NoTls};
use streamwal::sink::{SinkError, TransactionalSink};

/// The sink of one query into one table.
pub struct PgSink {
    url: String,
    query: String,
    table: String,
    client: Client,
    /// The batch whose transaction is open (begun, not prepared).
    open: Option<u64>,
}

impl std::fmt::Debug for PgSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSink")
            .field("query", &self.query)
            .field("table", &self.table)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl PgSink {
    /// Connect to `url` for `query`, writing into `table` (an SQL
    /// identifier the caller controls), and create the tables if missing.
    pub fn connect(url: &str, query: &str, table: &str) -> Result<PgSink, SinkError> {
        let mut client = Client::connect(url, NoTls)?;
        // Under a lock: two sessions creating the same table at once can
        // both pass IF NOT EXISTS and one then fails on the catalog.
        client.batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7306428);
             CREATE TABLE IF NOT EXISTS {table} (query text NOT NULL, batch bigint NOT NULL, \
             id bigint NOT NULL, n bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS streamwal_batches (query text NOT NULL, \
             batch bigint NOT NULL, PRIMARY KEY (query, batch)); COMMIT;"
        ))?;
        Ok(PgSink {
            url: url.to_string(),
            query: query.to_string(),
            table: table.to_string(),
            client,
            open: None,
        })
    }

    /// The prepared-transaction name of `batch_time`.
    pub fn gid(&self, batch_time: u64) -> String {
        format!("streamwal-{}-{batch_time}", self.query)
    }

    /// The client, for the test's own statements.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The connection, or a new one if the old one is closed and no
    /// transaction is open. With a batch's transaction open, a lost
    /// connection is an error: its writes are gone, and a new session
    /// would autocommit the next ones (abort the batch and run it again).
    fn live(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.is_closed() {
            if let Some(batch) = self.open {
                return Err(format!(
                    "the connection to PostgreSQL was lost with batch {batch}'s transaction                      open: its writes are gone; abort the batch and run it again"
                )
                .into());
            }
            self.client = Client::connect(&self.url, NoTls)?;
        }
        Ok(&mut self.client)
    }

    /// `txn` if it is this sink's prepared-transaction name of
    /// `batch_time` (a handle read back from the sink log is checked
    /// before it goes into SQL).
    fn checked_gid(&self, batch_time: u64, txn: &[u8]) -> Result<String, SinkError> {
        let gid = self.gid(batch_time);
        if txn != gid.as_bytes() {
            return Err(format!(
                "transaction handle {:?} is not {gid}, this sink's name for batch {batch_time}",
                String::from_utf8_lossy(txn)
            )
            .into());
        }
        Ok(gid)
    }

    /// Begin batch `batch_time`'s transaction.
    pub fn begin(&mut self, batch_time: u64) -> Result<(), SinkError> {
        if self.open.is_some() {
            if !self.client.is_closed() {
                self.client.batch_execute("ROLLBACK")?;
            }
            self.open = None;
        }
        self.live()?.batch_execute("BEGIN")?;
        self.open = Some(batch_time);
        Ok(())
    }

    /// Write one output row `(id, n)` into the open transaction.
    pub fn write(&mut self, id: u64, n: u64) -> Result<(), SinkError> {
        let Some(batch) = self.open else {
            return Err("write with no batch begun".into());
        };
        let sql = format!(
            "INSERT INTO {} (query, batch, id, n) VALUES ($1, $2, $3, $4)",
            self.table
        );
        let query = self.query.clone();
        self.live()?
            .execute(&sql, &[&query, &(batch as i64), &(id as i64), &(n as i64)])?;
        Ok(())
    }

    fn marker_exists(&mut self, batch_time: u64) -> Result<bool, SinkError> {
        let query = self.query.clone();
        let row = self.live()?.query_one(
            "SELECT count(*) FROM streamwal_batches WHERE query = $1 AND batch = $2",
            &[&query, &(batch_time as i64)],
        )?;
        Ok(row.get::<_, i64>(0) > 0)
    }
}

impl TransactionalSink for PgSink {
    fn pre_commit(&mut self, batch_time: u64) -> Result<Vec<u8>, SinkError> {
        if self.open != Some(batch_time) {
            return Err(format!("pre-commit of batch {batch_time}, which is not begun").into());
        }
        let query = self.query.clone();
        self.live()?.execute(
            "INSERT INTO streamwal_batches (query, batch) VALUES ($1, $2)",
            &[&query, &(batch_time as i64)],
        )?;
        let gid = self.gid(batch_time);
        self.live()?
            .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))?;
        self.open = None;
        // Outside a transaction block PREPARE TRANSACTION only warns:
        // check that there is something prepared under the name.
        let found = self
            .live()?
            .query_opt("SELECT 1 FROM pg_prepared_xacts WHERE gid = $1", &[&gid])?;
        if found.is_none() {
            return Err(format!("PREPARE TRANSACTION '{gid}' prepared nothing").into());
        }
        Ok(gid.into_bytes())
    }

    fn commit(&mut self, batch_time: u64, txn: &[u8]) -> Result<(), SinkError> {
        let gid = self.checked_gid(batch_time, txn)?;
        match self
            .live()?
            .batch_execute(&format!("COMMIT PREPARED '{gid}'"))
        {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                if self.marker_exists(batch_time)? {
                    Ok(()) // committed before a crash
                } else {
                    Err(
                        format!("prepared transaction {gid} is gone and was never committed")
                            .into(),
                    )
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn abort(&mut self, batch_time: u64, txn: Option<&[u8]>) -> Result<(), SinkError> {
        let gid = match txn {
            None => {
                if self.open == Some(batch_time) {
                    self.open = None;
                    if !self.client.is_closed() {
                        self.client.batch_execute("ROLLBACK")?;
                    }
                }
                if self.open.is_some() {
                    return Ok(()); // another batch's transaction is open
                }
                // A prepare whose reply was lost left it prepared.
                self.gid(batch_time)
            }
            Some(txn) => self.checked_gid(batch_time, txn)?,
        };
        match self
            .live()?
            .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
        {
            Err(e) if e.code() != Some(&SqlState::UNDEFINED_OBJECT) => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn in_doubt(&mut self) -> Result<Vec<(u64, Vec<u8>)>, SinkError> {
        let prefix = format!("streamwal-{}-", self.query);
        let rows = self.live()?.query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
            &[],
        )?;
        let mut out = Vec::new();
        for row in rows {
            let gid: String = row.get(0);
            // Digits only after the prefix: query `a` must not take `a-b`'s.
            if let Some(rest) = gid.strip_prefix(&prefix)
                && !rest.is_empty()
                && rest.bytes().all(|b| b.is_ascii_digit())
                && let Ok(batch) = rest.parse::<u64>()
            {
                out.push((batch, gid.into_bytes()));
            }
        }
        Ok(out)
    }
}
