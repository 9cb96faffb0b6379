//! One vector collection, laid out for scanning: vectors in contiguous blocks, norms
//! beside them, payload field names interned so a filter or a rescoring term compares
//! integers, not strings, and each filterable value sits in a column of 16-byte cells.
//! A search reads memory in order instead of chasing a heap allocation per vector and
//! per field.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ops::Bound;

use ww_guest::store::vector::{Point, Rescore, ScoreTerm, StoredPoint};
use ww_guest::store::{Condition, Field, FieldValue, Filter};

use crate::filter::equal;
use crate::search::{Hit, dot, norm};

type FieldId = u32;
type Payload = Vec<(FieldId, FieldValue)>;

/// Texts up to this many bytes are interned, so comparing them compares integers.
const SHORT_TEXT: usize = 64;

/// A payload value as a scan sees it: 16 bytes in a column, no pointer to chase. Long
/// texts and text lists are `Other`, and are compared from the payload itself.
#[derive(Clone, Copy)]
enum Cell {
    Absent,
    Integer(i64),
    Number(f64),
    Flag(bool),
    Text(u32),
    Other,
}

impl Cell {
    #[inline]
    fn number(self) -> Option<f64> {
        match self {
            Cell::Integer(i) => Some(i as f64),
            Cell::Number(n) => Some(n),
            _ => None,
        }
    }
}

/// A wanted value, resolved against the interned texts.
enum Want {
    /// A short text, with its id when any point has it.
    Text(Option<u32>),
    Number(f64),
    Flag(bool),
    /// Long texts and lists: only `Other` cells can equal them.
    Other,
}

/// Slots per block of vectors.
const BLOCK: usize = 1024;

/// Equal-length vectors in fixed-size blocks.
struct Vectors {
    dimension: usize,
    blocks: Vec<Vec<f32>>,
    len: usize,
}

impl Vectors {
    fn new(dimension: usize) -> Self {
        Self {
            dimension,
            blocks: Vec::new(),
            len: 0,
        }
    }

    fn range(&self, slot: usize) -> (usize, std::ops::Range<usize>) {
        let start = (slot % BLOCK) * self.dimension;
        (slot / BLOCK, start..start + self.dimension)
    }

    fn get(&self, slot: usize) -> &[f32] {
        let (block, range) = self.range(slot);
        &self.blocks[block][range]
    }

    fn set(&mut self, slot: usize, vector: &[f32]) {
        let (block, range) = self.range(slot);
        self.blocks[block][range].copy_from_slice(vector);
    }

    fn push(&mut self, vector: &[f32]) {
        if self.len.is_multiple_of(BLOCK) {
            self.blocks.push(Vec::with_capacity(BLOCK * self.dimension));
        }
        if let Some(block) = self.blocks.last_mut() {
            block.extend_from_slice(vector);
        }
        self.len += 1;
    }

    /// Copy the last vector over `slot` (before `pop`).
    fn move_last_to(&mut self, slot: usize) {
        let last = self.get(self.len - 1).to_vec();
        self.set(slot, &last);
    }

    fn pop(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        let dimension = self.dimension;
        if let Some(block) = self.blocks.last_mut() {
            block.truncate(block.len() - dimension);
            if block.is_empty() {
                self.blocks.pop();
            }
        }
    }
}

pub struct Points {
    pub dimension: u32,
    /// id → slot, ordered so scrolling pages in id order.
    index: BTreeMap<String, usize>,
    ids: Vec<String>,
    /// The vectors, contiguous within blocks of `BLOCK` slots: growing never copies or
    /// over-allocates more than one block.
    vectors: Vectors,
    norms: Vec<f32>,
    payloads: Vec<Payload>,
    names: Vec<String>,
    name_ids: HashMap<String, FieldId>,
    /// One column of cells per field name, indexed by slot.
    columns: Vec<Vec<Cell>>,
    short_texts: HashMap<String, u32>,
}

/// A filter condition with its field name resolved (`None`: no point has that field).
enum Check {
    Equals(Option<FieldId>, (Want, FieldValue)),
    AnyOf(Option<FieldId>, Vec<(Want, FieldValue)>),
    Within(Option<FieldId>, Option<f64>, Option<f64>),
    Missing(Option<FieldId>),
}

struct CompiledFilter {
    must: Vec<Check>,
    must_not: Vec<Check>,
}

enum Term {
    Linear(Option<FieldId>, f64),
    Decay {
        field: Option<FieldId>,
        origin: f64,
        scale: f64,
        weight: f64,
    },
}

fn value(payload: &Payload, id: FieldId) -> Option<&FieldValue> {
    payload.iter().find(|(f, _)| *f == id).map(|(_, v)| v)
}

impl Points {
    pub fn new(dimension: u32) -> Self {
        Self {
            dimension,
            index: BTreeMap::new(),
            ids: Vec::new(),
            vectors: Vectors::new(dimension as usize),
            norms: Vec::new(),
            payloads: Vec::new(),
            names: Vec::new(),
            name_ids: HashMap::new(),
            columns: Vec::new(),
            short_texts: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    fn vector(&self, slot: usize) -> &[f32] {
        self.vectors.get(slot)
    }

    fn intern(&mut self, name: String) -> FieldId {
        if let Some(id) = self.name_ids.get(&name) {
            return *id;
        }
        let id = self.names.len() as FieldId;
        self.names.push(name.clone());
        self.name_ids.insert(name, id);
        self.columns.push(vec![Cell::Absent; self.ids.len()]);
        id
    }

    fn cell_of(&mut self, value: &FieldValue) -> Cell {
        match value {
            FieldValue::Integer(i) => Cell::Integer(*i),
            FieldValue::Number(n) => Cell::Number(*n),
            FieldValue::Flag(b) => Cell::Flag(*b),
            FieldValue::Text(t) if t.len() <= SHORT_TEXT => {
                let next = self.short_texts.len() as u32;
                Cell::Text(*self.short_texts.entry(t.clone()).or_insert(next))
            }
            FieldValue::Text(_) | FieldValue::Texts(_) => Cell::Other,
        }
    }

    /// Set the cells of `slot` from its payload.
    fn fill_cells(&mut self, slot: usize) {
        let payload = std::mem::take(&mut self.payloads[slot]);
        for (field, value) in &payload {
            let cell = self.cell_of(value);
            self.columns[*field as usize][slot] = cell;
        }
        self.payloads[slot] = payload;
    }

    #[inline]
    fn cell(&self, slot: usize, field: Option<FieldId>) -> Cell {
        field.map_or(Cell::Absent, |f| self.columns[f as usize][slot])
    }

    fn want(&self, value: &FieldValue) -> Want {
        match value {
            FieldValue::Integer(i) => Want::Number(*i as f64),
            FieldValue::Number(n) => Want::Number(*n),
            FieldValue::Flag(b) => Want::Flag(*b),
            FieldValue::Text(t) if t.len() <= SHORT_TEXT => {
                Want::Text(self.short_texts.get(t).copied())
            }
            FieldValue::Text(_) | FieldValue::Texts(_) => Want::Other,
        }
    }

    /// `filter::equal`, on cells; `Other` cells are compared from the payload.
    fn cell_equals(
        &self,
        slot: usize,
        field: Option<FieldId>,
        wanted: &(Want, FieldValue),
    ) -> bool {
        match (self.cell(slot, field), &wanted.0) {
            (Cell::Absent, _) => false,
            (Cell::Other, _) => field
                .and_then(|f| value(&self.payloads[slot], f))
                .is_some_and(|v| equal(v, &wanted.1)),
            (cell, Want::Number(x)) => cell.number() == Some(*x),
            (Cell::Text(id), Want::Text(wanted)) => Some(id) == *wanted,
            (Cell::Flag(a), Want::Flag(b)) => a == *b,
            _ => false,
        }
    }

    #[inline]
    fn holds(&self, slot: usize, check: &Check) -> bool {
        match check {
            Check::Equals(field, wanted) => self.cell_equals(slot, *field, wanted),
            Check::AnyOf(field, values) => values.iter().any(|w| self.cell_equals(slot, *field, w)),
            Check::Within(field, gte, lte) => self
                .cell(slot, *field)
                .number()
                .is_some_and(|x| gte.is_none_or(|lo| x >= lo) && lte.is_none_or(|hi| x <= hi)),
            Check::Missing(field) => matches!(self.cell(slot, *field), Cell::Absent),
        }
    }

    #[inline]
    fn accepts(&self, slot: usize, filter: &CompiledFilter) -> bool {
        filter.must.iter().all(|c| self.holds(slot, c))
            && !filter.must_not.iter().any(|c| self.holds(slot, c))
    }

    fn field_id(&self, name: &str) -> Option<FieldId> {
        self.name_ids.get(name).copied()
    }

    fn intern_all(&mut self, fields: Vec<Field>) -> Payload {
        fields
            .into_iter()
            .map(|f| (self.intern(f.name), f.value))
            .collect()
    }

    /// Insert or replace a point (its vector is already validated).
    pub fn upsert(&mut self, point: Point) {
        let payload = self.intern_all(point.payload);
        let norm = norm(&point.vector);
        match self.index.get(&point.id) {
            Some(&slot) => {
                self.vectors.set(slot, &point.vector);
                self.norms[slot] = norm;
                self.payloads[slot] = payload;
                for column in &mut self.columns {
                    column[slot] = Cell::Absent;
                }
                self.fill_cells(slot);
            }
            None => {
                self.index.insert(point.id.clone(), self.ids.len());
                self.ids.push(point.id);
                self.vectors.push(&point.vector);
                self.norms.push(norm);
                self.payloads.push(payload);
                for column in &mut self.columns {
                    column.push(Cell::Absent);
                }
                self.fill_cells(self.ids.len() - 1);
            }
        }
    }

    /// Remove a point: the last slot moves into its place.
    pub fn delete(&mut self, id: &str) {
        let Some(slot) = self.index.remove(id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if slot != last {
            self.vectors.move_last_to(slot);
            self.index.insert(self.ids[last].clone(), slot);
        }
        self.ids.swap_remove(slot);
        self.norms.swap_remove(slot);
        self.payloads.swap_remove(slot);
        for column in &mut self.columns {
            column.swap_remove(slot);
        }
        self.vectors.pop();
    }

    /// Set (add or replace) payload fields of a point.
    pub fn update(&mut self, id: &str, fields: Vec<Field>) {
        let Some(&slot) = self.index.get(id) else {
            return;
        };
        for field in fields {
            let name = self.intern(field.name);
            let cell = self.cell_of(&field.value);
            self.columns[name as usize][slot] = cell;
            let payload = &mut self.payloads[slot];
            match payload.iter_mut().find(|(f, _)| *f == name) {
                Some((_, existing)) => *existing = field.value,
                None => payload.push((name, field.value)),
            }
        }
    }

    fn payload(&self, slot: usize) -> Vec<Field> {
        self.payloads[slot]
            .iter()
            .map(|(id, value)| Field {
                name: self.names[*id as usize].clone(),
                value: value.clone(),
            })
            .collect()
    }

    fn stored(&self, slot: usize, with_vector: bool) -> StoredPoint {
        StoredPoint {
            id: self.ids[slot].clone(),
            payload: self.payload(slot),
            vector: with_vector.then(|| self.vector(slot).to_vec()),
        }
    }

    pub fn get(&self, id: &str, with_vector: bool) -> Option<StoredPoint> {
        self.index
            .get(id)
            .map(|&slot| self.stored(slot, with_vector))
    }

    fn compile(&self, filter: &Filter) -> CompiledFilter {
        let want = |value: &FieldValue| (self.want(value), value.clone());
        let check = |condition: &Condition| match condition {
            Condition::Equals(field) => {
                Check::Equals(self.field_id(&field.name), want(&field.value))
            }
            Condition::AnyOf((name, values)) => {
                Check::AnyOf(self.field_id(name), values.iter().map(want).collect())
            }
            Condition::Within(range) => {
                Check::Within(self.field_id(&range.name), range.gte, range.lte)
            }
            Condition::Missing(name) => Check::Missing(self.field_id(name)),
        };
        CompiledFilter {
            must: filter.must.iter().map(check).collect(),
            must_not: filter.must_not.iter().map(check).collect(),
        }
    }

    pub fn count(&self, filter: &Filter) -> u64 {
        let filter = self.compile(filter);
        (0..self.ids.len())
            .filter(|&slot| self.accepts(slot, &filter))
            .count() as u64
    }

    /// Up to `limit` points passing `filter`, in id order, after `after`.
    pub fn scroll(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
        with_vectors: bool,
    ) -> Vec<StoredPoint> {
        let filter = self.compile(filter);
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        self.index
            .range((start, Bound::Unbounded))
            .filter(|(_, slot)| self.accepts(**slot, &filter))
            .take(limit)
            .map(|(_, &slot)| self.stored(slot, with_vectors))
            .collect()
    }

    #[inline]
    fn rescore(&self, slot: usize, terms: &[Term], similarity_weight: f64, cosine: f32) -> f64 {
        // Not `max`: in wasm that is a call to libm's fmaxf, in the innermost loop.
        let positive = if cosine > 0.0 { cosine } else { 0.0 };
        let mut score = similarity_weight * f64::from(positive);
        for term in terms {
            score += match term {
                Term::Linear(field, weight) => {
                    weight * self.cell(slot, *field).number().unwrap_or(0.0)
                }
                Term::Decay {
                    field,
                    origin,
                    scale,
                    weight,
                } => self
                    .cell(slot, *field)
                    .number()
                    .map_or(0.0, |x| weight * (-(x - origin).abs() / scale).exp()),
            };
        }
        score
    }

    /// The best `keep` points passing `filter`, best first, and how many passed. Scored
    /// by cosine similarity, or by `formula` when given; exact.
    pub fn search(
        &self,
        query: &[f32],
        filter: &Filter,
        formula: Option<&Rescore>,
        keep: usize,
    ) -> (Vec<(Hit<'_>, StoredPoint)>, usize) {
        let filter = self.compile(filter);
        let terms: Vec<Term> = formula
            .map(|f| {
                f.terms
                    .iter()
                    .map(|term| match term {
                        ScoreTerm::Linear((name, weight)) => {
                            Term::Linear(self.field_id(name), *weight)
                        }
                        ScoreTerm::ExpDecay(decay) => Term::Decay {
                            field: self.field_id(&decay.field),
                            origin: decay.origin,
                            scale: decay.scale,
                            weight: decay.weight,
                        },
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A formula that ignores similarity (latest first, say) needs no dot product.
        let needs_similarity = formula.is_none_or(|f| f.similarity_weight != 0.0);
        let query_norm = norm(query);
        let mut heap: BinaryHeap<Reverse<Hit<'_>>> = BinaryHeap::with_capacity(keep + 1);
        let mut candidates = 0;
        for slot in 0..self.ids.len() {
            if !self.accepts(slot, &filter) {
                continue;
            }
            candidates += 1;
            let denominator = self.norms[slot] * query_norm;
            let similarity = if needs_similarity && denominator > 0.0 {
                (dot(self.vector(slot), query) / denominator).clamp(-1.0, 1.0)
            } else {
                0.0
            };
            let hit = Hit {
                score: match formula {
                    Some(f) => self.rescore(slot, &terms, f.similarity_weight, similarity),
                    None => f64::from(similarity),
                },
                similarity,
                slot,
                id: &self.ids[slot],
            };
            if heap.len() < keep {
                heap.push(Reverse(hit));
            } else if heap.peek().is_some_and(|Reverse(worst)| hit > *worst) {
                heap.pop();
                heap.push(Reverse(hit));
            }
        }
        let mut hits: Vec<Hit<'_>> = heap.into_iter().map(|Reverse(hit)| hit).collect();
        hits.sort_by(|a, b| b.cmp(a));
        let found = hits
            .into_iter()
            .map(|hit| {
                let point = self.stored(hit.slot, false);
                (hit, point)
            })
            .collect();
        (found, candidates)
    }
}
