//! The Neo4j adapter: the graph role over Cypher and Bolt, for Neo4j or any Bolt server
//! (FalkorDB with its `BOLT_PORT`, Memgraph).
//!
//! Every statement is fixed text with parameters: values never enter the query, and the
//! only names that do are labels and relation types from the WIT enums and property
//! names checked to be identifiers. Nodes carry the label `WwNode` (indexed on `id`,
//! unique where the server supports constraints) and their role label (`Episode`,
//! `Entity`, `Procedure`); relations are the enum's names in upper snake case with the
//! weight as the `weight` property.
//!
//! One connection is kept open and reused; a broken one is replaced and the statement
//! retried once (every statement here is idempotent). Each statement is a CLIENT span
//! `neo4j.query` with the database attributes; its `traceparent`, and the request's
//! baggage as a map, travel in the transaction metadata, so the server's query log can be
//! joined to the trace.
//!
//! Settings (`[roles.graph-store]`): `endpoint = "bolt://host:7687"`, `database`
//! (default `neo4j`), `user` with the secret `password` (no auth without them),
//! `connect_timeout_ms` (2000), `query_timeout_ms` (5000).

mod client;

use crate::client::{Client, Statement};
use ww_bolt::{Value, packstream};

use ww_guest::graph_store::{Condition, Error, Field, FieldValue, StoreHealth, ValidationError};
use ww_guest::graph_store::{
    Direction, Edge, EdgeReweight, Guest, Neighbor, Node, NodeLabel, RelationType,
};

/// Most rows one call returns.
const MAX_LIMIT: u32 = 10_000;
/// A property name, in bytes: it is spliced into Cypher as an identifier (checked to be
/// one), so it is kept short as well as plain.
const MAX_PROPERTY_NAME: usize = 128;

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Validation(ValidationError {
        field: Some(field.to_owned()),
        message: message.into(),
    })
}

fn check_limit(limit: u32) -> Result<(), Error> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(())
}

/// A property name that may appear in query text: an identifier, not a reserved one.
fn property_name<'a>(name: &'a str, reserved: &str) -> Result<&'a str, Error> {
    let mut chars = name.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_PROPERTY_NAME;
    if !identifier {
        return Err(invalid(
            "properties",
            format!("{name:?} is not a property name (letters, digits and _)"),
        ));
    }
    if name == reserved {
        return Err(invalid("properties", format!("{name:?} is reserved")));
    }
    Ok(name)
}

fn label(label: NodeLabel) -> &'static str {
    match label {
        NodeLabel::Episode => "Episode",
        NodeLabel::Entity => "Entity",
        NodeLabel::Procedure => "Procedure",
    }
}

fn label_of(labels: &[Value]) -> Option<NodeLabel> {
    labels.iter().find_map(|l| match l.as_str()? {
        "Episode" => Some(NodeLabel::Episode),
        "Entity" => Some(NodeLabel::Entity),
        "Procedure" => Some(NodeLabel::Procedure),
        _ => None,
    })
}

const RELATIONS: [(RelationType, &str); 12] = [
    (RelationType::Uses, "USES"),
    (RelationType::Produces, "PRODUCES"),
    (RelationType::Requires, "REQUIRES"),
    (RelationType::Causes, "CAUSES"),
    (RelationType::PartOf, "PART_OF"),
    (RelationType::SimilarTo, "SIMILAR_TO"),
    (RelationType::Implements, "IMPLEMENTS"),
    (RelationType::ImprovesOn, "IMPROVES_ON"),
    (RelationType::Supersedes, "SUPERSEDES"),
    (RelationType::DerivedFrom, "DERIVED_FROM"),
    (RelationType::Follows, "FOLLOWS"),
    (RelationType::MergedInto, "MERGED_INTO"),
];

fn relation(relation: RelationType) -> &'static str {
    RELATIONS
        .iter()
        .find(|(r, _)| *r == relation)
        .map(|(_, name)| *name)
        .unwrap_or("RELATED")
}

fn relation_of(name: &str) -> Option<RelationType> {
    RELATIONS.iter().find(|(_, n)| *n == name).map(|(r, _)| *r)
}

/// `:A|B|C` for a pattern, or nothing (every type) when `relations` is empty.
fn relation_pattern(relations: &[RelationType]) -> String {
    let mut names: Vec<&str> = relations.iter().map(|r| relation(*r)).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        String::new()
    } else {
        format!(":{}", names.join("|"))
    }
}

fn to_value(value: &FieldValue) -> Value {
    match value {
        FieldValue::Text(t) => Value::String(t.clone()),
        FieldValue::Integer(i) => Value::Int(*i),
        FieldValue::Number(n) => Value::Float(*n),
        FieldValue::Flag(b) => Value::Bool(*b),
        FieldValue::Texts(ts) => Value::List(ts.iter().map(|t| Value::String(t.clone())).collect()),
    }
}

fn from_value(value: &Value) -> Option<FieldValue> {
    Some(match value {
        Value::String(t) => FieldValue::Text(t.clone()),
        Value::Int(i) => FieldValue::Integer(*i),
        Value::Float(n) => FieldValue::Number(*n),
        Value::Bool(b) => FieldValue::Flag(*b),
        Value::List(items) => FieldValue::Texts(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// The properties map written for `fields` (checked), plus `extra`.
fn properties(
    fields: &[Field],
    reserved: &str,
    extra: Option<(&str, Value)>,
) -> Result<Value, Error> {
    let mut entries = Vec::with_capacity(fields.len() + 1);
    for field in fields {
        property_name(&field.name, reserved)?;
        if matches!(field.value, FieldValue::Number(n) if !n.is_finite()) {
            return Err(invalid(
                "properties",
                format!("{} is not a finite number", field.name),
            ));
        }
        entries.push((field.name.clone(), to_value(&field.value)));
    }
    if let Some((key, value)) = extra {
        entries.push((key.to_owned(), value));
    }
    Ok(Value::Map(entries))
}

/// Fields from a properties map, leaving out `skip`, in name order (a stable order the
/// embedded store also has).
fn fields_of(props: &Value, skip: &str) -> Vec<Field> {
    let Value::Map(entries) = props else {
        return Vec::new();
    };
    let mut fields: Vec<Field> = entries
        .iter()
        .filter(|(k, _)| k != skip)
        .filter_map(|(k, v)| {
            Some(Field {
                name: k.clone(),
                value: from_value(v)?,
            })
        })
        .collect();
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    fields
}

/// A node from a returned Node structure (`N`: id, labels, properties, ...).
fn node_of(value: &Value) -> Result<Node, Error> {
    let bad = || Error::Storage("the server returned a node in an unexpected form".into());
    let Value::Struct(0x4E, fields) = value else {
        return Err(bad());
    };
    let (Some(Value::List(labels)), Some(props)) = (fields.get(1), fields.get(2)) else {
        return Err(bad());
    };
    Ok(Node {
        id: props
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned(),
        label: label_of(labels).ok_or_else(bad)?,
        properties: fields_of(props, "id"),
    })
}

/// An edge from returned columns: source id, relation type, the Relationship
/// structure (`R`: id, start, end, type, properties, ...), target id.
fn edge_of(source: &Value, relation: &Value, rel: &Value, target: &Value) -> Result<Edge, Error> {
    let bad = || Error::Storage("the server returned a relation in an unexpected form".into());
    let Value::Struct(0x52, fields) = rel else {
        return Err(bad());
    };
    let props = fields.get(4).ok_or_else(bad)?;
    Ok(Edge {
        source: source.as_str().ok_or_else(bad)?.to_owned(),
        target: target.as_str().ok_or_else(bad)?.to_owned(),
        relation: relation.as_str().and_then(relation_of).ok_or_else(bad)?,
        weight: match props.get("weight") {
            Some(Value::Float(w)) => *w,
            Some(Value::Int(w)) => *w as f64,
            _ => 1.0,
        },
        properties: fields_of(props, "weight"),
    })
}

/// The WHERE clause for `conditions` on node `n`, its parameters added to `params`.
fn where_clause(
    conditions: &[Condition],
    params: &mut Vec<(String, Value)>,
) -> Result<String, Error> {
    let mut clauses = Vec::with_capacity(conditions.len());
    for (i, condition) in conditions.iter().enumerate() {
        let p = format!("c{i}");
        let clause = match condition {
            Condition::Equals(field) => {
                let name = property_name(&field.name, "")?;
                params.push((p.clone(), to_value(&field.value)));
                format!("n.`{name}` = ${p}")
            }
            Condition::AnyOf((name, values)) => {
                let name = property_name(name, "")?;
                params.push((
                    p.clone(),
                    Value::List(values.iter().map(to_value).collect()),
                ));
                format!("n.`{name}` IN ${p}")
            }
            Condition::Within(range) => {
                let name = property_name(&range.name, "")?;
                let mut parts = vec![format!("n.`{name}` IS NOT NULL")];
                if let Some(gte) = range.gte {
                    params.push((format!("{p}_gte"), Value::Float(gte)));
                    parts.push(format!("n.`{name}` >= ${p}_gte"));
                }
                if let Some(lte) = range.lte {
                    params.push((format!("{p}_lte"), Value::Float(lte)));
                    parts.push(format!("n.`{name}` <= ${p}_lte"));
                }
                parts.join(" AND ")
            }
            Condition::Missing(name) => {
                let name = property_name(name, "")?;
                format!("n.`{name}` IS NULL")
            }
        };
        clauses.push(clause);
    }
    Ok(if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    })
}

fn id_param(id: &str) -> Value {
    packstream::map([("id", Value::from(id))])
}

/// The one integer a counting statement returns.
fn single_count(rows: &client::Rows) -> i64 {
    rows.rows
        .first()
        .and_then(|row| row.first())
        .and_then(Value::as_int)
        .unwrap_or(0)
}

fn exists(client: &mut Client, id: &str) -> Result<(), Error> {
    let rows = client.run(Statement::read(
        "MATCH (n:WwNode {id: $id}) RETURN count(n)",
        id_param(id),
    ))?;
    if single_count(&rows) == 0 {
        return Err(Error::NotFound(format!("no node {id}")));
    }
    Ok(())
}

struct Neo4jStore;

impl Guest for Neo4jStore {
    fn upsert_node(node: Node) -> Result<(), Error> {
        let props = properties(
            &node.properties,
            "id",
            Some(("id", Value::from(node.id.as_str()))),
        )?;
        let query = format!(
            "MERGE (n:WwNode:{} {{id: $id}}) SET n = $props",
            label(node.label)
        );
        client::with(|c| {
            c.run(Statement::write(
                &query,
                packstream::map([
                    ("id", Value::from(node.id.as_str())),
                    ("props", props.clone()),
                ]),
            ))
            .map(drop)
        })
    }

    fn update_node(id: String, properties: Vec<Field>) -> Result<(), Error> {
        let props = self::properties(&properties, "id", None)?;
        client::with(|c| {
            let rows = c.run(Statement::write(
                "MATCH (n:WwNode {id: $id}) SET n += $props RETURN count(n)",
                packstream::map([("id", Value::from(id.as_str())), ("props", props.clone())]),
            ))?;
            if single_count(&rows) == 0 {
                return Err(Error::NotFound(format!("no node {id}")));
            }
            Ok(())
        })
    }

    fn get_node(id: String) -> Result<Option<Node>, Error> {
        client::with(|c| {
            let rows = c.run(Statement::read(
                "MATCH (n:WwNode {id: $id}) RETURN n LIMIT 1",
                id_param(&id),
            ))?;
            rows.rows
                .first()
                .and_then(|row| row.first())
                .map(node_of)
                .transpose()
        })
    }

    fn find_nodes(
        label: NodeLabel,
        conditions: Vec<Condition>,
        limit: u32,
    ) -> Result<Vec<Node>, Error> {
        check_limit(limit)?;
        let mut params = vec![("limit".to_owned(), Value::Int(i64::from(limit)))];
        let clause = where_clause(&conditions, &mut params)?;
        let query = format!(
            "MATCH (n:WwNode:{}) {clause} RETURN n ORDER BY n.id LIMIT $limit",
            self::label(label)
        );
        client::with(|c| {
            let rows = c.run(Statement::read(&query, Value::Map(params.clone())))?;
            rows.rows
                .iter()
                .filter_map(|row| row.first())
                .map(node_of)
                .collect()
        })
    }

    fn delete_node(id: String) -> Result<bool, Error> {
        client::with(|c| {
            let rows = c.run(Statement::write(
                "MATCH (n:WwNode {id: $id}) DETACH DELETE n RETURN count(*)",
                id_param(&id),
            ))?;
            Ok(single_count(&rows) > 0)
        })
    }

    /// One statement a node and an edge, in order, on one connection. Not one
    /// transaction (the Bolt client runs auto-commit statements, and labels and relation
    /// types cannot be parameters): a failure part-way keeps what was written before it.
    /// A batch of episodes stays invisible to recall until its vector points are written,
    /// after this, so a partial graph write shows no partial episode.
    fn upsert_graph(nodes: Vec<Node>, edges: Vec<Edge>) -> Result<(), Error> {
        for node in nodes {
            Self::upsert_node(node)?;
        }
        for edge in edges {
            Self::upsert_edge(edge)?;
        }
        Ok(())
    }

    /// One statement an edge. The new weight is computed in the `SET` from the stored
    /// one, a direct dependency, for which Cypher takes the relationship's write lock
    /// before reading it (Neo4j's "lost updates" rule; FalkorDB runs writes one at a
    /// time): concurrent changes of one edge all count.
    fn reweight_edges(changes: Vec<EdgeReweight>) -> Result<u32, Error> {
        for c in &changes {
            if !(c.scale.is_finite() && c.offset.is_finite()) {
                return Err(invalid(
                    "changes",
                    "scale and offset must be finite numbers",
                ));
            }
        }
        client::with(|c| {
            let mut applied = 0u32;
            for change in &changes {
                let query = format!(
                    "MATCH (a:WwNode {{id: $source}})-[r:{}]->(b:WwNode {{id: $target}}) \
                     SET r.weight = r.weight * $scale + $offset RETURN count(r)",
                    relation(change.relation)
                );
                let rows = c.run(Statement::write(
                    &query,
                    packstream::map([
                        ("source", Value::from(change.source.as_str())),
                        ("target", Value::from(change.target.as_str())),
                        ("scale", Value::Float(change.scale)),
                        ("offset", Value::Float(change.offset)),
                    ]),
                ))?;
                applied += u32::from(single_count(&rows) > 0);
            }
            Ok(applied)
        })
    }

    fn upsert_edge(edge: Edge) -> Result<(), Error> {
        if edge.source == edge.target {
            return Err(invalid(
                "target",
                "an edge from a node to itself is not allowed",
            ));
        }
        if !edge.weight.is_finite() {
            return Err(invalid("weight", "must be a finite number"));
        }
        let props = properties(
            &edge.properties,
            "weight",
            Some(("weight", Value::Float(edge.weight))),
        )?;
        let query = format!(
            "MATCH (a:WwNode {{id: $source}}), (b:WwNode {{id: $target}}) \
             MERGE (a)-[r:{}]->(b) SET r = $props RETURN count(r)",
            relation(edge.relation)
        );
        client::with(|c| {
            let rows = c.run(Statement::write(
                &query,
                packstream::map([
                    ("source", Value::from(edge.source.as_str())),
                    ("target", Value::from(edge.target.as_str())),
                    ("props", props.clone()),
                ]),
            ))?;
            if single_count(&rows) == 0 {
                exists(c, &edge.source)?;
                exists(c, &edge.target)?;
                return Err(Error::Storage("the relation was not written".into()));
            }
            Ok(())
        })
    }

    fn get_edge(
        source: String,
        target: String,
        relation: RelationType,
    ) -> Result<Option<Edge>, Error> {
        let query = format!(
            "MATCH (a:WwNode {{id: $source}})-[r:{}]->(b:WwNode {{id: $target}}) \
             RETURN a.id, type(r), r, b.id LIMIT 1",
            self::relation(relation)
        );
        client::with(|c| {
            let rows = c.run(Statement::read(
                &query,
                packstream::map([
                    ("source", Value::from(source.as_str())),
                    ("target", Value::from(target.as_str())),
                ]),
            ))?;
            match rows.rows.first().map(Vec::as_slice) {
                Some([s, t, r, b]) => edge_of(s, t, r, b).map(Some),
                _ => Ok(None),
            }
        })
    }

    fn neighbors(
        id: String,
        direction: Direction,
        relations: Vec<RelationType>,
        limit: u32,
    ) -> Result<Vec<Neighbor>, Error> {
        check_limit(limit)?;
        let types = relation_pattern(&relations);
        let pattern = match direction {
            Direction::Outgoing => format!("(a)-[r{types}]->(b:WwNode)"),
            Direction::Incoming => format!("(a)<-[r{types}]-(b:WwNode)"),
            Direction::Both => format!("(a)-[r{types}]-(b:WwNode)"),
        };
        // One statement: no row at all when the node does not exist, one row of nulls
        // when it has no neighbours (OPTIONAL MATCH).
        let query = format!(
            "MATCH (a:WwNode {{id: $id}}) OPTIONAL MATCH {pattern} \
             RETURN startNode(r).id, type(r), r, endNode(r).id, b \
             ORDER BY b.id, type(r) LIMIT $limit"
        );
        client::with(|c| {
            let rows = c.run(Statement::read(
                &query,
                packstream::map([
                    ("id", Value::from(id.as_str())),
                    ("limit", Value::Int(i64::from(limit))),
                ]),
            ))?;
            if rows.rows.is_empty() {
                return Err(Error::NotFound(format!("no node {id}")));
            }
            rows.rows
                .iter()
                .filter(|row| row.get(2).is_some_and(|r| *r != Value::Null))
                .map(|row| match row.as_slice() {
                    [s, t, r, e, b] => Ok(Neighbor {
                        edge: edge_of(s, t, r, e)?,
                        node: node_of(b)?,
                    }),
                    _ => Err(Error::Storage("a neighbour row has the wrong shape".into())),
                })
                .collect()
        })
    }

    fn degree(id: String, relations: Vec<RelationType>) -> Result<u32, Error> {
        // Grouped by the node: no row when it does not exist.
        let query = format!(
            "MATCH (a:WwNode {{id: $id}}) OPTIONAL MATCH (a)-[r{}]-() RETURN a.id, count(r)",
            relation_pattern(&relations)
        );
        client::with(|c| {
            let rows = c.run(Statement::read(&query, id_param(&id)))?;
            match rows
                .rows
                .first()
                .and_then(|row| row.get(1))
                .and_then(Value::as_int)
            {
                Some(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
                None => Err(Error::NotFound(format!("no node {id}"))),
            }
        })
    }

    fn count_nodes(label: NodeLabel) -> Result<u64, Error> {
        let query = format!("MATCH (n:WwNode:{}) RETURN count(n)", self::label(label));
        client::with(|c| {
            let rows = c.run(Statement::read(&query, Value::Map(Vec::new())))?;
            Ok(single_count(&rows).max(0) as u64)
        })
    }

    fn health() -> StoreHealth {
        let status = client::with(|c| {
            c.run(Statement::read("RETURN 1", Value::Map(Vec::new())))?;
            Ok(c.describe())
        });
        StoreHealth {
            backend: "neo4j".to_owned(),
            healthy: status.is_ok(),
            detail: match status {
                Ok(detail) => detail,
                Err(Error::Storage(m)) => m,
                Err(other) => format!("{other:?}"),
            },
        }
    }
}

ww_guest::export_graph_store!(Neo4jStore);
