//! Hand-written SQL that diesel can keep prepared, and constants written into SQL text.
//!
//! Both exist for the query planner and the statement cache, not for convenience:
//! - [`Stmt`]: a statement with fixed text. Diesel never caches `sql_query`, `UPDATE`s or
//!   `IN (...)` lists, so each call would be parsed (SQLite) or parsed, planned and sent twice
//!   (PostgreSQL). A fixed text is parsed once per connection.
//! - [`Lit`]: a status compared as a literal (`status = 'Running'`) instead of a bound value.
//!   A partial index (`... WHERE status = 'Ready'`) can only serve a query whose text says the
//!   same: with the status bound, SQLite scans the whole table — every heartbeat and every
//!   recovery pass would read all history.

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::expression::{
    AppearsOnTable, Expression, SelectableExpression, ValidGrouping, is_aggregate,
};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Text, Untyped};

/// One bind value of a [`Stmt`].
trait Arg<DB: Backend>: Send + Sync {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()>;
}

struct Typed<ST, T>(T, PhantomData<fn() -> ST>);

impl<DB, ST, T> Arg<DB> for Typed<ST, T>
where
    DB: Backend + HasSqlType<ST>,
    T: ToSql<ST, DB> + Send + Sync,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_bind_param::<ST, T>(&self.0)
    }
}

/// A hand-written statement with fixed text (`?` marks each bind, in order; diesel writes the
/// backend's placeholder). Its text never depends on the values, so diesel keeps it prepared.
pub(crate) struct Stmt<DB: Backend> {
    /// The text between the `?` marks.
    parts: &'static [&'static str],
    args: Vec<Box<dyn Arg<DB>>>,
}

impl<DB: Backend> Stmt<DB> {
    /// `sql` is one of the engine's statement constants: its pieces are split once per
    /// process and kept, since diesel walks a statement several times per call.
    pub(crate) fn new(sql: &'static str) -> Self {
        Stmt {
            parts: parts(sql),
            args: Vec::with_capacity(8),
        }
    }

    pub(crate) fn bind<ST, T>(mut self, value: T) -> Self
    where
        DB: HasSqlType<ST>,
        T: ToSql<ST, DB> + Send + Sync + 'static,
        ST: 'static,
    {
        self.args.push(Box::new(Typed::<ST, T>(value, PhantomData)));
        self
    }
}

/// The pieces of `sql` between its `?` marks. Splitting on every walk was 7 % of the SQLite
/// writer thread's instructions; the texts are the engine's constants, so the set is small and
/// fixed and each is split once.
fn parts(sql: &'static str) -> &'static [&'static str] {
    type Split = std::collections::HashMap<(usize, usize), &'static [&'static str]>;
    static SPLIT: std::sync::OnceLock<std::sync::RwLock<Split>> = std::sync::OnceLock::new();
    let key = (sql.as_ptr() as usize, sql.len());
    let split = SPLIT.get_or_init(Default::default);
    if let Some(p) = crate::sync::read(split).get(&key) {
        return p;
    }
    crate::sync::write(split)
        .entry(key)
        .or_insert_with(|| Box::leak(sql.split('?').collect::<Vec<_>>().into_boxed_slice()))
}

impl<DB: Backend> QueryFragment<DB> for Stmt<DB> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut args = self.args.iter();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                let arg = args.next().ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        "a statement lacks a bind value".into(),
                    )
                })?;
                arg.push(&mut out)?;
            }
            out.push_sql(part);
        }
        if args.next().is_some() {
            return Err(diesel::result::Error::QueryBuilderError(
                "a statement has more bind values than placeholders".into(),
            ));
        }
        Ok(())
    }
}

impl<DB: Backend> QueryId for Stmt<DB> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend> Query for Stmt<DB> {
    type SqlType = Untyped;
}

impl<DB: Backend, Conn> diesel::RunQueryDsl<Conn> for Stmt<DB> {}

/// SQLite runs a fixed-text statement straight on its blocking connection. Through
/// diesel-async's wrapper every statement first had its binds copied into owned buffers, its
/// SQL rendered and its cacheability checked, before diesel did the same work again: going
/// straight took 11 % off the writer thread's instructions (callgrind). The connection's runtime
/// ([`Inline`](super::sqlite::Inline)) runs the call where it is issued, so this changes no
/// thread and no transaction; these inherent methods take the place of diesel-async's
/// `RunQueryDsl` ones for SQLite, so the queries shared by both backends read the same.
impl Stmt<diesel::sqlite::Sqlite> {
    pub(crate) async fn execute(self, conn: &mut super::sqlite::Conn) -> QueryResult<usize> {
        conn.spawn_blocking(move |c| diesel::RunQueryDsl::execute(self, c))
            .await
    }

    pub(crate) async fn get_result<U>(self, conn: &mut super::sqlite::Conn) -> QueryResult<U>
    where
        U: diesel::QueryableByName<diesel::sqlite::Sqlite> + Send + 'static,
    {
        conn.spawn_blocking(move |c| diesel::RunQueryDsl::get_result(self, c))
            .await
    }

    pub(crate) async fn load<U>(self, conn: &mut super::sqlite::Conn) -> QueryResult<Vec<U>>
    where
        U: diesel::QueryableByName<diesel::sqlite::Sqlite> + Send + 'static,
    {
        conn.spawn_blocking(move |c| diesel::RunQueryDsl::load(self, c))
            .await
    }
}

/// A text constant written into the SQL (`'Running'`), for comparisons a partial index must
/// recognise. Only ever built from the engine's own status names, never from input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lit(pub(crate) &'static str);

impl Expression for Lit {
    type SqlType = Text;
}

impl<DB: Backend> QueryFragment<DB> for Lit {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if self.0.contains('\'') {
            return Err(diesel::result::Error::QueryBuilderError(
                format!("refusing to write {:?} into SQL text", self.0).into(),
            ));
        }
        out.push_sql("'");
        out.push_sql(self.0);
        out.push_sql("'");
        Ok(())
    }
}

// Not a static id: the statement cache then keys a query by its text, which holds the value.
impl QueryId for Lit {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<QS> AppearsOnTable<QS> for Lit {}
impl<QS> SelectableExpression<QS> for Lit {}
impl<GB> ValidGrouping<GB> for Lit {
    type IsAggregate = is_aggregate::Never;
}
