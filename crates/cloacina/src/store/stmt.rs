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

/// The text of a [`Stmt`]: a `&'static str`, or a type of its own declared with
/// [`statement!`], which diesel's statement cache finds by its type instead of rendering the
/// text and hashing it on every call (a tenth of the SQLite writer thread's instructions).
pub(crate) trait SqlText: Copy + Send + Sync + 'static {
    /// What diesel's statement cache keys the statement by, when [`SqlText::TYPED`].
    type Id: 'static;
    const TYPED: bool;
    fn sql(self) -> &'static str;
    /// The text between the `?` marks (typed statements keep their own; others look theirs up).
    fn parts(self) -> &'static [&'static str] {
        parts(self.sql())
    }
    /// The same, of the text without its `RETURNING` clause.
    fn parts_without_returning(self) -> &'static [&'static str] {
        parts(without_returning(self.sql()))
    }
}

/// `sql` without its `RETURNING` clause (which binds nothing).
pub(crate) fn without_returning(sql: &'static str) -> &'static str {
    match sql.find(" RETURNING ") {
        Some(i) => &sql[..i],
        None => sql,
    }
}

/// `sql` split at its `?` marks.
pub(crate) fn split(sql: &'static str) -> &'static [&'static str] {
    Box::leak(sql.split('?').collect::<Vec<_>>().into_boxed_slice())
}

impl SqlText for &'static str {
    type Id = ();
    const TYPED: bool = false;
    fn sql(self) -> &'static str {
        self
    }
}

/// Declares a statement text as a type of its own (see [`SqlText`]). Only for texts bound
/// with the same SQL types wherever they are used: PostgreSQL fixes a prepared statement's
/// parameter types when it is prepared, and a typed statement is prepared once per connection.
macro_rules! statement {
    ($(#[$doc:meta])* $vis:vis $name:ident = $text:expr;) => {
        $(#[$doc])*
        // Named like the constants they replace: a statement reads as `Stmt::new(BUMP)`.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy)]
        $vis struct $name;
        impl $crate::store::stmt::SqlText for $name {
            type Id = $name;
            const TYPED: bool = true;
            fn sql(self) -> &'static str {
                $text
            }
            fn parts(self) -> &'static [&'static str] {
                static PARTS: std::sync::OnceLock<&'static [&'static str]> =
                    std::sync::OnceLock::new();
                PARTS.get_or_init(|| $crate::store::stmt::split($text))
            }
            fn parts_without_returning(self) -> &'static [&'static str] {
                static PARTS: std::sync::OnceLock<&'static [&'static str]> =
                    std::sync::OnceLock::new();
                PARTS.get_or_init(|| {
                    $crate::store::stmt::split($crate::store::stmt::without_returning($text))
                })
            }
        }
    };
}
pub(crate) use statement;

/// A statement's text without its `RETURNING` clause (see [`Stmt::without_returning`]).
#[derive(Clone, Copy)]
pub(crate) struct NoReturning<T>(T);

impl<T: SqlText> SqlText for NoReturning<T> {
    type Id = NoReturning<T::Id>;
    const TYPED: bool = T::TYPED;
    fn sql(self) -> &'static str {
        without_returning(self.0.sql())
    }
    fn parts(self) -> &'static [&'static str] {
        self.0.parts_without_returning()
    }
}

/// A hand-written statement with fixed text (`?` marks each bind, in order; diesel writes the
/// backend's placeholder). Its text never depends on the values, so diesel keeps it prepared.
pub(crate) struct Stmt<DB: Backend, T: SqlText = &'static str> {
    text: T,
    /// The text between the `?` marks.
    parts: &'static [&'static str],
    args: Vec<Box<dyn Arg<DB>>>,
}

impl<DB: Backend, T: SqlText> Stmt<DB, T> {
    /// `text` is one of the engine's statement constants: its pieces are split once per
    /// process and kept, since diesel walks a statement several times per call.
    pub(crate) fn new(text: T) -> Self {
        Stmt {
            text,
            parts: text.parts(),
            args: Vec::with_capacity(8),
        }
    }

    pub(crate) fn bind<ST, V>(mut self, value: V) -> Self
    where
        DB: HasSqlType<ST>,
        V: ToSql<ST, DB> + Send + Sync + 'static,
        ST: 'static,
    {
        self.args.push(Box::new(Typed::<ST, V>(value, PhantomData)));
        self
    }

    /// The statement without its `RETURNING` clause, which binds nothing (see the SQLite
    /// backend's `update_returning`).
    pub(crate) fn without_returning(self) -> Stmt<DB, NoReturning<T>> {
        let text = NoReturning(self.text);
        Stmt {
            text,
            parts: text.parts(),
            args: self.args,
        }
    }
}

/// The pieces of `sql` between its `?` marks, for an untyped statement. Splitting on every
/// walk was 7 % of the SQLite writer thread's instructions; the texts are the engine's
/// constants, so the set is small and fixed and each is split once.
fn parts(sql: &'static str) -> &'static [&'static str] {
    type Split = std::collections::HashMap<(usize, usize), &'static [&'static str]>;
    static SPLIT: std::sync::OnceLock<std::sync::RwLock<Split>> = std::sync::OnceLock::new();
    let key = (sql.as_ptr() as usize, sql.len());
    let cache = SPLIT.get_or_init(Default::default);
    if let Some(p) = crate::sync::read(cache).get(&key) {
        return p;
    }
    crate::sync::write(cache)
        .entry(key)
        .or_insert_with(|| split(sql))
}

impl<DB: Backend, T: SqlText> QueryFragment<DB> for Stmt<DB, T> {
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

impl<DB: Backend, T: SqlText> QueryId for Stmt<DB, T> {
    type QueryId = T::Id;
    const HAS_STATIC_QUERY_ID: bool = T::TYPED;
}

impl<DB: Backend, T: SqlText> Query for Stmt<DB, T> {
    type SqlType = Untyped;
}

impl<DB: Backend, T: SqlText, Conn> diesel::RunQueryDsl<Conn> for Stmt<DB, T> {}

/// SQLite runs a fixed-text statement straight on its blocking connection. Through
/// diesel-async's wrapper every statement first had its binds copied into owned buffers, its
/// SQL rendered and its cacheability checked, before diesel did the same work again: going
/// straight took 11 % off the writer thread's instructions (callgrind). The connection's runtime
/// ([`Inline`](super::sqlite::Inline)) runs the call where it is issued, so this changes no
/// thread and no transaction; these inherent methods take the place of diesel-async's
/// `RunQueryDsl` ones for SQLite, so the queries shared by both backends read the same.
impl<T: SqlText> Stmt<diesel::sqlite::Sqlite, T> {
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
