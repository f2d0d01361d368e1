//! Arrow Flight SQL on the query handler's port, for the clients analysts already use (ADBC,
//! JDBC, DBeaver, notebooks): statements, prepared statements with parameters, and the catalog
//! calls generic clients browse with.
//!
//! Every query goes through the same path as the query API's (`QueryHandlerService::answer`):
//! one read-only statement, the same limits and timeout, the orange cache and the query log.
//! `GetFlightInfo` runs the query, so its answer's schema is exact; the ticket names the answer
//! (query id, normalized SQL, replica version), and `DoGet` streams it from the cache, from the
//! answers held here for a short while when the cache did not keep them, or, when the ticket
//! reaches another handler behind a load balancer, by asking again.
//!
//! Callers present an API key with the read scope, as on the REST read path: the
//! `authorization: Bearer <key>` header on every call, or a handshake with HTTP Basic whose
//! password is the key (what JDBC and DBeaver send), answered with the bearer header to use.
//! The cluster secret is not asked here: analysts never get it.
//!
//! Prepared statements are stateless: the handle holds the statement's SQL, and binding
//! parameters (`DoPut`) answers a new handle that also holds the SQL with the values in place,
//! as the Flight SQL protocol allows (`DoPutPreparedStatementResult`). Values go into the parsed statement as literals, never
//! into its text, so a parameter cannot change the query's shape, and a bound query is cached
//! like any other.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::common::ScalarValue;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    CastKind, DataType as SqlDataType, Expr as SqlExpr, TimezoneInfo, UnaryOperator, Value,
    visit_expressions_mut,
};
use futures::{Stream, TryStreamExt};
use prost::Message;
use sluice_auth::{AuthError, Keys};
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::QueryHandlerService;
use crate::engine::{self, Answer, TABLE};

/// Answers held for their `DoGet` when the cache did not keep them, at most this long...
const HELD_FOR: Duration = Duration::from_secs(60);
/// ...and at most this many bytes together: past it, a `DoGet` runs its query again.
const HELD_BYTES: usize = 256 << 20;

/// The Flight SQL service of one query handler.
pub struct FlightSql {
    handler: QueryHandlerService,
    keys: Arc<Keys>,
    held: Arc<Held>,
    info: Arc<SqlInfoData>,
}

impl FlightSql {
    pub fn new(handler: QueryHandlerService, keys: Arc<Keys>) -> anyhow::Result<Self> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Sluice");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        info.append(SqlInfo::SqlQuotedIdentifierCase, 3i32); // case sensitive
        Ok(FlightSql {
            handler,
            keys,
            held: Arc::new(Held::default()),
            info: Arc::new(info.build()?),
        })
    }

    /// Refuses a caller without a key that may read.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let headers = request.metadata().clone().into_headers();
        self.keys
            .caller(&headers)
            .and_then(|caller| caller.require_read())
            .map_err(refusal)
    }

    /// What a prepared statement answers and takes, from planning it on the current replica
    /// without running it: its columns, and its parameters (`$1`, `$2`, … in order; `?` are
    /// numbered so) with the types planning infers, null where it cannot. Either is None when
    /// planning cannot tell (the client learns the columns from the answer then); a statement
    /// that is not one read-only query is refused.
    async fn describe(&self, sql: &str) -> Result<(Option<Schema>, Option<Schema>), Status> {
        let parsed = engine::parse(sql)?;
        let Statement::Statement(mut statement) = parsed.statement else {
            return Ok((None, None));
        };
        let mut positional = 0usize;
        let _ = visit_expressions_mut(&mut *statement, |expr| {
            if let SqlExpr::Value(value) = expr
                && let Value::Placeholder(name) = &mut value.value
                && name == "?"
            {
                positional += 1;
                *name = format!("${positional}");
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        let ctx = self.handler.plain_session()?;
        let Ok(plan) = ctx
            .state()
            .statement_to_plan(Statement::Statement(statement))
            .await
        else {
            return Ok((None, None));
        };
        let columns = plan.schema().as_arrow().clone();
        let parameters = plan.get_parameter_types().ok().map(|types| {
            let mut types: Vec<(usize, String, Option<DataType>)> = types
                .into_iter()
                .map(|(name, kind)| {
                    let number = name
                        .strip_prefix('$')
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(usize::MAX);
                    (number, name, kind)
                })
                .collect();
            types.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            Schema::new(
                types
                    .into_iter()
                    .map(|(_, name, kind)| Field::new(name, kind.unwrap_or(DataType::Null), true))
                    .collect::<Vec<_>>(),
            )
        });
        Ok((Some(columns), parameters))
    }

    /// Runs `sql` as the REST read path does, holds its answer for the `DoGet` if the cache
    /// did not keep it, and describes it: its schema, size and ticket.
    async fn flight_info(
        &self,
        sql: &str,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let answered = self.handler.answer(sql).await?;
        let schema = answer_schema(&answered.answer)?;
        let handle = AnswerHandle {
            id: answered.id.clone(),
            sql: answered.sql.clone(),
            version: answered.answer.replica_version,
        };
        if !answered.kept {
            self.held.put(handle.id.clone(), answered.answer.clone());
        }
        let ticket = TicketStatementQuery {
            statement_handle: serde_json::to_vec(&handle)
                .map_err(|e| Status::internal(e.to_string()))?
                .into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the answer's schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_total_records(answered.answer.rows as i64)
            .with_total_bytes(answered.answer.ipc.len() as i64)
            .with_ordered(true);
        Ok(Response::new(info))
    }
}

/// What a Flight SQL client is told when its key does not do.
fn refusal(error: AuthError) -> Status {
    let message = error.to_string();
    match error {
        AuthError::Forbidden { .. } => Status::permission_denied(message),
        AuthError::RateLimited { .. } => Status::resource_exhausted(message),
        _ => Status::unauthenticated(message),
    }
}

/// What a statement ticket names: one answer of one query.
#[derive(serde::Serialize, serde::Deserialize)]
struct AnswerHandle {
    id: String,
    sql: String,
    version: u64,
}

/// Answers waiting for their `DoGet`, oldest first, within [`HELD_FOR`] and [`HELD_BYTES`].
#[derive(Default)]
struct Held {
    answers: Mutex<VecDeque<(String, Instant, Arc<Answer>)>>,
}

impl Held {
    fn put(&self, id: String, answer: Arc<Answer>) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        answers.retain(|(_, at, _)| now.duration_since(*at) < HELD_FOR);
        let size = answer.size_bytes();
        let mut total: usize = answers.iter().map(|(_, _, a)| a.size_bytes()).sum();
        while total + size > HELD_BYTES
            && let Some((_, _, oldest)) = answers.pop_front()
        {
            total -= oldest.size_bytes();
        }
        if size <= HELD_BYTES {
            answers.push_back((id, now, answer));
        }
    }

    fn take(&self, id: &str) -> Option<Arc<Answer>> {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let at = answers.iter().position(|(held, _, _)| held == id)?;
        answers.remove(at).map(|(_, _, answer)| answer)
    }
}

/// The schema of an answer's Arrow IPC stream.
fn answer_schema(answer: &Answer) -> Result<Schema, Status> {
    let reader = StreamReader::try_new(answer.ipc.as_slice(), None)
        .map_err(|e| Status::internal(format!("cannot read the answer: {e}")))?;
    Ok(reader.schema().as_ref().clone())
}

type FlightStream = <FlightSql as FlightService>::DoGetStream;

/// Streams an answer's batches as Flight data.
fn stream_answer(answer: Arc<Answer>) -> Result<Response<FlightStream>, Status> {
    let reader = StreamReader::try_new(std::io::Cursor::new(answer.ipc.clone()), None)
        .map_err(|e| Status::internal(format!("cannot read the answer: {e}")))?;
    let schema = reader.schema();
    let batches = futures::stream::iter(reader.map(|batch| batch.map_err(FlightError::from)));
    stream_batches(schema, batches)
}

fn stream_batches(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Result<Response<FlightStream>, Status> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

/// Streams the one batch a catalog call's builder made.
fn one_batch(batch: Result<RecordBatch, FlightError>) -> Result<Response<FlightStream>, Status> {
    let batch = batch.map_err(Status::from)?;
    stream_batches(batch.schema(), futures::stream::iter([Ok(batch)]))
}

/// A prepared statement's handle: its SQL, and the SQL with the last bound parameters in
/// place. The original stays in it, since a client may bind other values to the new handle.
#[derive(serde::Serialize, serde::Deserialize)]
struct PreparedHandle {
    sql: String,
    bound: Option<String>,
}

impl PreparedHandle {
    fn decode(handle: &[u8]) -> Result<Self, Status> {
        serde_json::from_slice(handle).map_err(|_| {
            Status::invalid_argument("the prepared statement handle is not one this service issued")
        })
    }

    fn encode(&self) -> Result<prost::bytes::Bytes, Status> {
        serde_json::to_vec(self)
            .map(Into::into)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// A schema as Flight SQL sends it in a prepared statement's description: an IPC schema
/// message; empty when unknown.
fn ipc_schema(schema: Option<&Schema>) -> Result<prost::bytes::Bytes, Status> {
    let Some(schema) = schema else {
        return Ok(Default::default());
    };
    let options = arrow::ipc::writer::IpcWriteOptions::default();
    let IpcMessage(bytes) =
        SchemaAsIpc::new(schema, &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| {
                Status::internal(format!("cannot encode a schema: {e}"))
            })?;
    Ok(bytes)
}

/// `sql` with its placeholders (`?` in order, or `$1`, `$2`, …) replaced by the values of
/// `row` of `parameters`, as literals in the parsed statement. The SQL must have as many
/// distinct placeholders as `parameters` has columns.
fn bind(sql: &str, parameters: &RecordBatch, row: usize) -> Result<String, Status> {
    let values: Vec<SqlExpr> = parameters
        .columns()
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let value = ScalarValue::try_from_array(column.as_ref(), row)
                .map_err(|e| Status::invalid_argument(format!("parameter {}: {e}", index + 1)))?;
            literal(&value).map_err(|why| {
                Status::invalid_argument(format!(
                    "parameter {} ({}): {why}",
                    index + 1,
                    column.data_type()
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let parsed = engine::parse(sql)?;
    let Statement::Statement(mut statement) = parsed.statement else {
        return Err(Status::invalid_argument("only a query can take parameters"));
    };
    let mut next_positional = 0usize;
    let mut used = vec![false; values.len()];
    let mut problem: Option<String> = None;
    let _ = visit_expressions_mut(&mut *statement, |expr| {
        if let SqlExpr::Value(value) = expr
            && let Value::Placeholder(name) = &value.value
        {
            let index = if name == "?" {
                next_positional += 1;
                Some(next_positional - 1)
            } else {
                name.strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| n.checked_sub(1))
            };
            match index.and_then(|i| values.get(i).map(|v| (i, v))) {
                Some((i, literal)) => {
                    used[i] = true;
                    *expr = literal.clone();
                }
                None => {
                    problem.get_or_insert(format!(
                        "placeholder {name} has no value: {} parameters were bound",
                        values.len()
                    ));
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    if let Some(problem) = problem {
        return Err(Status::invalid_argument(problem));
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(Status::invalid_argument(format!(
            "parameter {} was bound but the statement has no placeholder for it",
            unused + 1
        )));
    }
    Ok(statement.to_string())
}

/// The SQL literal of a parameter's value.
fn literal(value: &ScalarValue) -> Result<SqlExpr, String> {
    let number = |text: String| {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(digits) => (true, digits.to_string()),
            None => (false, text),
        };
        let number = SqlExpr::value(Value::Number(digits, false));
        if negative {
            SqlExpr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: Box::new(number),
            }
        } else {
            number
        }
    };
    let cast = |text: String, data_type: SqlDataType| SqlExpr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(SqlExpr::value(Value::SingleQuotedString(text))),
        data_type,
        array: false,
        format: None,
    };
    if value.is_null() {
        return Ok(SqlExpr::value(Value::Null));
    }
    Ok(match value {
        ScalarValue::Boolean(Some(b)) => SqlExpr::value(Value::Boolean(*b)),
        ScalarValue::Int8(Some(v)) => number(v.to_string()),
        ScalarValue::Int16(Some(v)) => number(v.to_string()),
        ScalarValue::Int32(Some(v)) => number(v.to_string()),
        ScalarValue::Int64(Some(v)) => number(v.to_string()),
        ScalarValue::UInt8(Some(v)) => number(v.to_string()),
        ScalarValue::UInt16(Some(v)) => number(v.to_string()),
        ScalarValue::UInt32(Some(v)) => number(v.to_string()),
        ScalarValue::UInt64(Some(v)) => number(v.to_string()),
        ScalarValue::Float32(Some(v)) if v.is_finite() => cast(v.to_string(), SqlDataType::Real),
        ScalarValue::Float64(Some(v)) if v.is_finite() => {
            cast(v.to_string(), SqlDataType::DoublePrecision)
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => SqlExpr::value(Value::SingleQuotedString(s.clone())),
        ScalarValue::Date32(Some(_)) | ScalarValue::Date64(Some(_)) => {
            cast(value.to_string(), SqlDataType::Date)
        }
        ScalarValue::TimestampSecond(..)
        | ScalarValue::TimestampMillisecond(..)
        | ScalarValue::TimestampMicrosecond(..)
        | ScalarValue::TimestampNanosecond(..) => {
            let text = value
                .cast_to(&DataType::Utf8)
                .map_err(|e| e.to_string())?
                .to_string();
            cast(text, SqlDataType::Timestamp(None, TimezoneInfo::None))
        }
        other => {
            return Err(format!(
                "values of type {} cannot be bound; use a string, number, boolean, date or timestamp",
                other.data_type()
            ));
        }
    })
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// HTTP Basic with the API key as the password (the user name is not looked at), or a
    /// bearer key; answered with the bearer header later calls send.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .trim();
        let key = match presented.split_once(' ') {
            Some((scheme, basic)) if scheme.eq_ignore_ascii_case("basic") => {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(basic.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        Status::unauthenticated("the Basic credentials do not decode")
                    })?;
                decoded
                    .split_once(':')
                    .map(|(_, password)| password.to_string())
                    .unwrap_or(decoded)
            }
            Some((scheme, bearer)) if scheme.eq_ignore_ascii_case("bearer") => {
                bearer.trim().to_string()
            }
            _ if self.keys.is_open() => String::new(),
            _ => {
                return Err(Status::unauthenticated(
                    "send an API key with the read scope: `authorization: Bearer <key>`, or Basic credentials whose password is the key",
                ));
            }
        };
        let bearer = format!("Bearer {key}");
        let mut headers = http::HeaderMap::new();
        if !key.is_empty() {
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&bearer)
                    .map_err(|_| Status::unauthenticated("the key is not a valid header value"))?,
            );
        }
        self.keys
            .caller(&headers)
            .and_then(|caller| caller.require_read())
            .map_err(refusal)?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: key.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        if !key.is_empty() {
            let value = MetadataValue::try_from(bearer.as_str())
                .map_err(|_| Status::unauthenticated("the key is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        self.flight_info(&query.query, request.into_inner()).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let handle = PreparedHandle::decode(&query.prepared_statement_handle)?;
        let sql = handle.bound.unwrap_or(handle.sql);
        self.flight_info(&sql, request.into_inner()).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.authorize(&request)?;
        let handle: AnswerHandle = serde_json::from_slice(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("the ticket is not one this service issued"))?;
        let kept = || self.handler.cached(&(handle.sql.clone(), handle.version));
        let answer = match self.held.take(&handle.id).or_else(kept) {
            Some(answer) => answer,
            // Another handler described it, or it was let go: ask again.
            None => self.handler.answer(&handle.sql).await?.answer,
        };
        stream_answer(answer)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.authorize(&request)?;
        let handle = PreparedHandle::decode(&query.prepared_statement_handle)?;
        let data = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(data)
                .try_collect()
                .await
                .map_err(|e| {
                    Status::invalid_argument(format!("the parameters do not decode: {e}"))
                })?;
        let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        let bound = match batches.as_slice() {
            [] => None,
            [batch] if batch.num_rows() == 1 => Some(bind(&handle.sql, batch, 0)?),
            _ => {
                return Err(Status::invalid_argument(
                    "bind one row of parameters: a query runs with one set of values",
                ));
            }
        };
        let handle = PreparedHandle {
            sql: handle.sql,
            bound,
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode()?),
        })
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(&request)?;
        // Refused here if it is not one read-only query.
        let (columns, parameters) = self.describe(&query.query).await?;
        let handle = PreparedHandle {
            sql: query.query,
            bound: None,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode()?,
            dataset_schema: ipc_schema(columns.as_ref())?,
            parameter_schema: ipc_schema(parameters.as_ref())?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Nothing is kept per statement.
        self.authorize(&request)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.into_builder().schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append(self.handler.catalog().0);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder().schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.authorize(&request)?;
        let (catalog, schema) = self.handler.catalog();
        let mut builder = query.into_builder();
        builder.append(catalog, schema);
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder().schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.authorize(&request)?;
        let (catalog, schema) = self.handler.catalog();
        let table_schema = self.handler.table_schema()?;
        let mut builder = query.into_builder();
        builder
            .append(catalog, schema, TABLE, "TABLE", &table_schema)
            .map_err(Status::from)?;
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.into_builder().schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder(&self.info).schema();
        metadata_info(query.as_any(), &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.authorize(&request)?;
        one_batch(query.into_builder(&self.info).build())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<FlightStream>, Status> {
        self.authorize(&request)?;
        Err(Status::invalid_argument(format!(
            "this ticket ({}) is not one this service issued",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The `FlightInfo` of a catalog call: its schema, and a ticket that is the command itself.
fn metadata_info(
    command: Any,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec()));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode a schema: {e}")))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Field;

    fn parameters(columns: Vec<(&str, Arc<dyn Array>)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, column)| Field::new(*name, column.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, c)| c).collect(),
        )
        .unwrap()
    }

    #[test]
    fn parameters_become_literals_of_the_parsed_statement() {
        let values = parameters(vec![
            (
                "0",
                Arc::new(StringArray::from(vec!["it's'; DROP TABLE x; --"])),
            ),
            ("1", Arc::new(Int64Array::from(vec![-3]))),
            ("2", Arc::new(Float64Array::from(vec![0.5]))),
        ]);
        let bound = bind(
            "SELECT count(*) FROM notifications WHERE platform = ? AND x > ? AND y < ?",
            &values,
            0,
        )
        .unwrap();
        assert_eq!(
            bound,
            "SELECT count(*) FROM notifications WHERE platform = 'it''s''; DROP TABLE x; --' \
             AND x > -3 AND y < CAST('0.5' AS DOUBLE PRECISION)"
        );
        // Numbered placeholders may repeat and come in any order.
        let bound = bind("SELECT $2, $1, $2", &values.project(&[0, 1]).unwrap(), 0).unwrap();
        assert_eq!(bound, "SELECT -3, 'it''s''; DROP TABLE x; --', -3");
    }

    #[test]
    fn a_count_of_parameters_that_does_not_fit_is_refused() {
        let one = parameters(vec![("0", Arc::new(Int64Array::from(vec![1])))]);
        let error = bind("SELECT ?, ?", &one, 0).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(
            error.message().contains("placeholder ? has no value"),
            "{error}"
        );
        let error = bind("SELECT 1", &one, 0).unwrap_err();
        assert!(error.message().contains("parameter 1 was bound"), "{error}");
        let error = bind("DELETE FROM notifications WHERE id = ?", &one, 0).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_null_parameter_is_null() {
        let null = parameters(vec![("0", Arc::new(Int64Array::from(vec![None::<i64>])))]);
        assert_eq!(
            bind("SELECT ? IS NULL", &null, 0).unwrap(),
            "SELECT NULL IS NULL"
        );
    }
}
