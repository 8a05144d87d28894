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
    sql: &'static str,
    args: Vec<Box<dyn Arg<DB>>>,
}

impl<DB: Backend> Stmt<DB> {
    pub(crate) fn new(sql: &'static str) -> Self {
        Stmt {
            sql,
            args: Vec::new(),
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

impl<DB: Backend> QueryFragment<DB> for Stmt<DB> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut args = self.args.iter();
        for (i, part) in self.sql.split('?').enumerate() {
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
