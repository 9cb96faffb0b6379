//! One vector collection, laid out for scanning: vectors in contiguous blocks, norms
//! beside them, payload field names interned so a filter or a rescoring term compares
//! integers, not strings, each filterable value in a column of 16-byte cells, and an 8-bit
//! copy of every vector for a first pass that reads a quarter of the memory. A search
//! reads memory in order instead of chasing a heap allocation per vector and per field.

// Slots index columns that grow and shrink together (every insert pushes to each, every
// removal swap-removes from each), and a slot comes only from the id index, which holds
// live slots; the scan's inner loops stay plain indexing, bounds-checked, for speed.
#![allow(clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ops::{Bound, Range};

use serde::{Deserialize, Serialize};
use ww_guest::store::vector::{EmbedderId, Point, Rescore, ScoreTerm, StoredPoint};
use ww_guest::store::{Condition, Field, FieldValue, Filter};

use crate::filter::equal;
use crate::lexical::Lexical;
use crate::search::{Hit, dot, dot_codes, norm, quantize};

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
struct Vectors<T> {
    dimension: usize,
    blocks: Vec<Vec<T>>,
    len: usize,
}

impl<T: Copy> Vectors<T> {
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

    fn get(&self, slot: usize) -> &[T] {
        let (block, range) = self.range(slot);
        &self.blocks[block][range]
    }

    fn set(&mut self, slot: usize, vector: &[T]) {
        let (block, range) = self.range(slot);
        self.blocks[block][range].copy_from_slice(vector);
    }

    fn push(&mut self, vector: &[T]) {
        if self.len.is_multiple_of(BLOCK) {
            self.blocks.push(Vec::with_capacity(BLOCK * self.dimension));
        }
        if let Some(block) = self.blocks.last_mut() {
            block.extend_from_slice(vector);
        }
        self.len += 1;
    }

    /// Append `n` vectors given as `n` × `dimension` values, converted by `value`.
    fn extend_with(&mut self, n: usize, mut value: impl FnMut(usize) -> T) {
        let d = self.dimension;
        let mut at = 0;
        for _ in 0..n {
            if self.len.is_multiple_of(BLOCK) {
                self.blocks.push(Vec::with_capacity(BLOCK * d));
            }
            if let Some(block) = self.blocks.last_mut() {
                block.extend((at..at + d).map(&mut value));
            }
            at += d;
            self.len += 1;
        }
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

/// A search's hits (best first, with their stored points), how many points passed the
/// filter, and how many of those the approximate pass left to score exactly.
pub struct Searched<'a> {
    pub hits: Vec<(Hit<'a>, StoredPoint)>,
    pub candidates: usize,
    pub rescored: usize,
}

/// A score ordered totally (scores are finite: inputs are validated).
struct Ordered(f64);
impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// How a search with query text joins the lexical ranking to the vector's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Vectors only; the text is ignored.
    Vector,
    /// Reciprocal rank fusion of the two rankings' first `depth` places:
    /// Σ 1/(k + rank), divided by its largest possible value (first in both), so the
    /// relevance lies in [0, 1]; a point in neither list has relevance 0.
    Rrf { k: f32, depth: usize },
    /// A convex combination of scores: `alpha` × max(0, cosine) + (1 − `alpha`) × BM25
    /// divided by the best BM25 among the filtered points, in [0, 1].
    Linear { alpha: f32 },
}

/// Where a scan's relevance comes from.
enum Relevance<'a> {
    /// The cosine similarity.
    Cosine,
    /// Given per slot (a fused ranking); 0 for slots not in it.
    Given(&'a HashMap<usize, f32>),
    /// `alpha` × max(0, cosine) + the slot's given lexical part (0 if absent).
    Blend(f32, &'a [f32]),
}

pub struct Points {
    pub dimension: u32,
    /// The embedder its vectors come from (`None`: written before it was recorded).
    pub embedder: Option<EmbedderId>,
    /// BM25 over the points' texts, by slot.
    lexical: Lexical,
    /// id → slot, ordered so scrolling pages in id order.
    index: BTreeMap<String, usize>,
    /// While a snapshot is restored: (id, slot) of the runs so far, built into `index`
    /// in one step at its end (`finish_restore`).
    restoring: Vec<(String, usize)>,
    ids: Vec<String>,
    /// The vectors, contiguous within blocks of `BLOCK` slots: growing never copies or
    /// over-allocates more than one block.
    vectors: Vectors<f32>,
    /// The same vectors quantised to 8 bits (`value ≈ code × scale`), for the first,
    /// approximate pass of a search; with each vector's scale and L1 norm, which bound
    /// the approximation's error.
    codes: Vectors<i8>,
    scales: Vec<f32>,
    l1_norms: Vec<f32>,
    norms: Vec<f32>,
    payloads: Vec<Payload>,
    names: Vec<String>,
    name_ids: foldhash::HashMap<String, FieldId>,
    /// One column of cells per field name, indexed by slot.
    columns: Vec<Vec<Cell>>,
    /// Hashed with foldhash, as `name_ids`: looked up for every short text of every
    /// payload a start restores.
    short_texts: foldhash::HashMap<String, u32>,
}

/// A collection as a snapshot begins it since field ids are kept (`Run`): everything but
/// its slots, with the payload field names by id.
#[derive(Serialize, Deserialize)]
pub struct PointsHead {
    pub dimension: u32,
    pub embedder: Option<EmbedderId>,
    /// The lexical index's terms by id.
    pub terms: Vec<String>,
    /// Payload field names by id.
    pub names: Vec<String>,
}

/// A run of slots as a snapshot holds them: every part as the collection holds it in
/// memory, so loading copies instead of rebuilding. Payloads keep their field ids (the
/// names are in the [`PointsHead`]) and the lexical documents are flat, so decoding
/// allocates neither a field name nor a list per document.
#[derive(Serialize, Deserialize)]
pub struct Run {
    pub ids: Vec<String>,
    /// The vectors' f32 values, little-endian, slot after slot.
    #[serde(with = "serde_bytes")]
    pub vectors: Vec<u8>,
    /// Their 8-bit codes, slot after slot.
    #[serde(with = "serde_bytes")]
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub l1_norms: Vec<f32>,
    pub norms: Vec<f32>,
    pub payloads: Vec<Vec<(u32, FieldValue)>>,
    /// Per slot: how many (term, count) pairs of `terms` are its, and its length.
    pub documents: Vec<(u32, u32)>,
    /// Every slot's (term, count) pairs, slot after slot.
    pub terms: Vec<(u32, u32)>,
}

/// A collection as a snapshot began it before field ids were kept (read only):
/// everything but its slots.
#[derive(Serialize, Deserialize)]
pub struct PointsHeader {
    pub dimension: u32,
    pub embedder: Option<EmbedderId>,
    /// The lexical index's terms by id.
    pub terms: Vec<String>,
}

/// A run of slots as a snapshot held them before field ids were kept (read only): each slot's vector, its 8-bit copy and the
/// numbers derived from it are kept as they are, so loading copies memory instead of
/// recomputing them, and the lexical index's documents as term ids, so no text is
/// tokenised again.
#[derive(Serialize, Deserialize)]
pub struct Slots {
    pub ids: Vec<String>,
    /// The vectors' f32 values, little-endian, slot after slot.
    #[serde(with = "serde_bytes")]
    pub vectors: Vec<u8>,
    /// Their 8-bit codes, slot after slot.
    #[serde(with = "serde_bytes")]
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub l1_norms: Vec<f32>,
    pub norms: Vec<f32>,
    pub payloads: Vec<Vec<Field>>,
    pub documents: Vec<(Vec<(u32, u32)>, u32)>,
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
            embedder: None,
            lexical: Lexical::default(),
            index: BTreeMap::new(),
            restoring: Vec::new(),
            ids: Vec::new(),
            vectors: Vectors::new(dimension as usize),
            codes: Vectors::new(dimension as usize),
            scales: Vec::new(),
            l1_norms: Vec::new(),
            norms: Vec::new(),
            payloads: Vec::new(),
            names: Vec::new(),
            name_ids: foldhash::HashMap::default(),
            columns: Vec::new(),
            short_texts: foldhash::HashMap::default(),
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
                // Looked up before inserting: most texts are known (a session, a kind),
                // and `entry` would copy the text every time.
                if let Some(&id) = self.short_texts.get(t.as_str()) {
                    return Cell::Text(id);
                }
                let next = self.short_texts.len() as u32;
                self.short_texts.insert(t.clone(), next);
                Cell::Text(next)
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
        let (codes, scale) = quantize(&point.vector);
        let l1 = point.vector.iter().map(|x| x.abs()).sum();
        match self.index.get(&point.id) {
            Some(&slot) => {
                self.vectors.set(slot, &point.vector);
                self.codes.set(slot, &codes);
                self.scales[slot] = scale;
                self.l1_norms[slot] = l1;
                self.norms[slot] = norm;
                self.payloads[slot] = payload;
                for column in &mut self.columns {
                    column[slot] = Cell::Absent;
                }
                self.fill_cells(slot);
                self.lexical.set(slot, point.text.as_deref());
            }
            None => {
                self.index.insert(point.id.clone(), self.ids.len());
                self.ids.push(point.id);
                self.vectors.push(&point.vector);
                self.codes.push(&codes);
                self.scales.push(scale);
                self.l1_norms.push(l1);
                self.norms.push(norm);
                self.payloads.push(payload);
                for column in &mut self.columns {
                    column.push(Cell::Absent);
                }
                self.fill_cells(self.ids.len() - 1);
                self.lexical.set(self.ids.len() - 1, point.text.as_deref());
            }
        }
    }

    /// Everything but the slots, for a snapshot.
    pub fn head(&self) -> PointsHead {
        PointsHead {
            dimension: self.dimension,
            embedder: self.embedder.clone(),
            terms: self.lexical.terms(),
            names: self.names.clone(),
        }
    }

    /// The slots in `range`, for a snapshot.
    pub fn run(&self, range: Range<usize>) -> Run {
        let d = self.dimension as usize;
        let mut vectors = Vec::with_capacity(range.len() * d * 4);
        let mut codes = Vec::with_capacity(range.len() * d);
        let mut documents = Vec::with_capacity(range.len());
        let mut terms = Vec::new();
        for slot in range.clone() {
            for x in self.vectors.get(slot) {
                vectors.extend_from_slice(&x.to_le_bytes());
            }
            codes.extend(self.codes.get(slot).iter().map(|&c| c as u8));
            let (document, length) = self.lexical.document_ref(slot);
            documents.push((document.len() as u32, length));
            terms.extend_from_slice(document);
        }
        Run {
            ids: self.ids[range.clone()].to_vec(),
            vectors,
            codes,
            scales: self.scales[range.clone()].to_vec(),
            l1_norms: self.l1_norms[range.clone()].to_vec(),
            norms: self.norms[range.clone()].to_vec(),
            payloads: self.payloads[range].to_vec(),
            documents,
            terms,
        }
    }

    /// An empty collection as a snapshot's head describes it.
    pub fn from_head(head: PointsHead) -> Self {
        let mut points = Self::new(head.dimension);
        points.embedder = head.embedder;
        points.lexical = Lexical::with_terms(head.terms);
        for name in head.names {
            points.intern(name);
        }
        points
    }

    /// Append a snapshot's run of slots; one that does not add up is refused whole.
    pub fn push_run(&mut self, run: Run) -> Result<(), String> {
        let n = run.ids.len();
        let d = self.dimension as usize;
        let pairs: u64 = run.documents.iter().map(|&(k, _)| u64::from(k)).sum();
        if run.vectors.len() != n * d * 4
            || run.codes.len() != n * d
            || [run.scales.len(), run.l1_norms.len(), run.norms.len()] != [n; 3]
            || run.payloads.len() != n
            || run.documents.len() != n
            || pairs != run.terms.len() as u64
        {
            return Err(format!("a run of {n} slots whose parts differ in length"));
        }
        let names = self.names.len() as u32;
        if let Some((bad, _)) = run.payloads.iter().flatten().find(|(f, _)| *f >= names) {
            return Err(format!("a payload names field {bad} of {names}"));
        }
        let mut at = 0;
        for &(k, length) in &run.documents {
            let end = at + k as usize;
            self.lexical
                .push_document(run.terms[at..end].to_vec(), length)?;
            at = end;
        }
        let first = self.ids.len();
        for (i, id) in run.ids.into_iter().enumerate() {
            self.restoring.push((id.clone(), first + i));
            self.ids.push(id);
        }
        let vectors = &run.vectors;
        self.vectors.extend_with(n, |i| {
            let b = i * 4;
            f32::from_le_bytes([vectors[b], vectors[b + 1], vectors[b + 2], vectors[b + 3]])
        });
        let codes = &run.codes;
        self.codes.extend_with(n, |i| codes[i] as i8);
        self.scales.extend(run.scales);
        self.l1_norms.extend(run.l1_norms);
        self.norms.extend(run.norms);
        self.payloads.extend(run.payloads);
        for column in &mut self.columns {
            column.resize(first + n, Cell::Absent);
        }
        for slot in first..first + n {
            self.fill_cells(slot);
        }
        Ok(())
    }

    /// Build the id index from the runs restored (a sort, then a tree built in bulk);
    /// an id twice is refused.
    pub fn finish_restore(&mut self) -> Result<(), String> {
        let restoring = std::mem::take(&mut self.restoring);
        let expected = self.index.len() + restoring.len();
        // `collect` sorts and builds a tree bottom-up, `append` merges two in one pass;
        // inserting one by one was the slow part.
        let mut built: BTreeMap<String, usize> = restoring.into_iter().collect();
        self.index.append(&mut built);
        if self.index.len() != expected {
            return Err("a point twice".to_owned());
        }
        Ok(())
    }

    /// An empty collection as a snapshot's header describes it.
    pub fn from_header(header: PointsHeader) -> Self {
        let mut points = Self::new(header.dimension);
        points.embedder = header.embedder;
        points.lexical = Lexical::with_terms(header.terms);
        points
    }

    /// Append a snapshot's run of slots; one that does not add up is refused whole.
    pub fn push_slots(&mut self, slots: Slots) -> Result<(), String> {
        let n = slots.ids.len();
        let d = self.dimension as usize;
        if slots.vectors.len() != n * d * 4
            || slots.codes.len() != n * d
            || [slots.scales.len(), slots.l1_norms.len(), slots.norms.len()] != [n; 3]
            || slots.payloads.len() != n
            || slots.documents.len() != n
        {
            return Err(format!("a run of {n} slots whose parts differ in length"));
        }
        let Slots {
            ids,
            vectors,
            codes,
            scales,
            l1_norms,
            norms,
            payloads,
            documents,
        } = slots;
        let mut vector = vec![0.0_f32; d];
        let mut code = vec![0_i8; d];
        for (i, ((id, payload), (terms, length))) in
            ids.into_iter().zip(payloads).zip(documents).enumerate()
        {
            for (x, bytes) in vector
                .iter_mut()
                .zip(vectors[i * d * 4..(i + 1) * d * 4].chunks_exact(4))
            {
                *x = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            }
            for (c, &byte) in code.iter_mut().zip(&codes[i * d..(i + 1) * d]) {
                *c = byte as i8;
            }
            let slot = self.ids.len();
            if self.index.contains_key(&id) {
                return Err(format!("point {id} twice"));
            }
            self.lexical.push_document(terms, length)?;
            // Interned before the slot exists: a new field's column is made as long as
            // the slots before it, like every other column, then all grow by one.
            let payload = self.intern_all(payload);
            self.index.insert(id.clone(), slot);
            self.ids.push(id);
            self.vectors.push(&vector);
            self.codes.push(&code);
            self.payloads.push(payload);
            for column in &mut self.columns {
                column.push(Cell::Absent);
            }
            self.fill_cells(slot);
        }
        self.scales.extend(scales);
        self.l1_norms.extend(l1_norms);
        self.norms.extend(norms);
        Ok(())
    }

    /// Remove a point: the last slot moves into its place.
    pub fn delete(&mut self, id: &str) {
        let Some(slot) = self.index.remove(id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if slot != last {
            self.vectors.move_last_to(slot);
            self.codes.move_last_to(slot);
            self.index.insert(self.ids[last].clone(), slot);
        }
        self.ids.swap_remove(slot);
        self.norms.swap_remove(slot);
        self.payloads.swap_remove(slot);
        for column in &mut self.columns {
            column.swap_remove(slot);
        }
        self.vectors.pop();
        self.codes.pop();
        self.scales.swap_remove(slot);
        self.l1_norms.swap_remove(slot);
        self.lexical.remove(slot);
    }

    /// Points whose text is indexed.
    pub fn indexed_texts(&self) -> u32 {
        self.lexical.indexed()
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
    /// by cosine similarity, or by `formula` when given.
    ///
    /// Exact, in two passes. The first reads the 8-bit codes (a quarter of the memory of
    /// the vectors, and an integer dot product): each point gets an approximate score and
    /// a bound on its error, and only points whose upper bound reaches the `keep`-th best
    /// lower bound survive. The second scores the survivors exactly from the full vectors.
    pub fn search(
        &self,
        query: &[f32],
        text: Option<&str>,
        filter: &Filter,
        formula: Option<&Rescore>,
        keep: usize,
        fusion: Fusion,
    ) -> Searched<'_> {
        let filter = self.compile(filter);
        let (text, depth, k) = match (text, fusion) {
            (Some(text), Fusion::Rrf { k, depth }) if self.lexical.indexed() > 0 => {
                (text, depth, k)
            }
            (Some(text), Fusion::Linear { alpha }) if self.lexical.indexed() > 0 => {
                let mut lexical = self
                    .lexical
                    .scores(text, |slot| self.accepts(slot, &filter));
                let best = lexical.iter().copied().fold(0.0_f32, f32::max);
                if best > 0.0 {
                    lexical
                        .iter_mut()
                        .for_each(|s| *s = (1.0 - alpha) * *s / best);
                }
                return self.scan(
                    query,
                    &filter,
                    formula,
                    keep,
                    Relevance::Blend(alpha, &lexical),
                );
            }
            _ => return self.scan(query, &filter, formula, keep, Relevance::Cosine),
        };
        // The two rankings, each to `depth` places: the vector one by the same exact
        // scan, the lexical one by BM25 over the same filtered points.
        let by_vector: Vec<(usize, f32)> = self
            .scan(query, &filter, None, depth, Relevance::Cosine)
            .hits
            .iter()
            .map(|(hit, _)| (hit.slot, hit.score as f32))
            .collect();
        let mut by_words: Vec<(usize, f32)> = self
            .lexical
            .scores(text, |slot| self.accepts(slot, &filter))
            .into_iter()
            .enumerate()
            .filter(|(_, score)| *score > 0.0)
            .collect();
        by_words.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        by_words.truncate(depth);
        let best = 2.0 / (k + 1.0);
        let mut fused: HashMap<usize, f32> = HashMap::new();
        for ranking in [by_vector, by_words] {
            // Equal scores share a rank (the first of them): two identical memories are
            // equally relevant, whatever order their ids put them in.
            let mut rank = 0;
            for (place, &(slot, score)) in ranking.iter().enumerate() {
                if place > 0 && score != ranking[place - 1].1 {
                    rank = place;
                }
                *fused.entry(slot).or_default() += 1.0 / (k + rank as f32 + 1.0) / best;
            }
        }
        self.scan(query, &filter, formula, keep, Relevance::Given(&fused))
    }

    /// [`Points::search`] with the filter compiled and the relevance decided.
    fn scan(
        &self,
        query: &[f32],
        filter: &CompiledFilter,
        formula: Option<&Rescore>,
        keep: usize,
        relevance: Relevance<'_>,
    ) -> Searched<'_> {
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
        let similarity_weight = formula.map_or(1.0, |f| f.similarity_weight);
        let score = |slot: usize, cosine: f32| match formula {
            Some(_) => self.rescore(slot, &terms, similarity_weight, cosine),
            None => f64::from(cosine),
        };
        // A formula that ignores similarity (latest first, say) needs no dot product, nor
        // does a relevance given per slot.
        let (given, alpha, lexical) = match relevance {
            Relevance::Given(given) => (Some(given), 1.0, None),
            Relevance::Cosine => (None, 1.0, None),
            Relevance::Blend(alpha, lexical) => (None, alpha, Some(lexical)),
        };
        let needs_similarity = similarity_weight != 0.0 && given.is_none();
        let given_at = |slot: usize| given.and_then(|g| g.get(&slot)).copied().unwrap_or(0.0);
        // The relevance of a slot whose cosine is `cosine`: the cosine itself, or blended
        // with its exact lexical part (the approximation error then shrinks by `alpha`).
        let blended = |slot: usize, cosine: f32| match lexical {
            Some(lexical) => {
                let positive = if cosine > 0.0 { cosine } else { 0.0 };
                alpha * positive + lexical.get(slot).copied().unwrap_or(0.0)
            }
            None => cosine,
        };
        let query_norm = norm(query);
        let query_l1: f32 = query.iter().map(|x| x.abs()).sum();
        let (query_codes, query_scale) = quantize(query);
        let n = self.dimension as f32;

        // Pass 1. `floor` holds the `keep` best lower bounds so far; its least only rises.
        let mut floor: BinaryHeap<Reverse<Ordered>> = BinaryHeap::with_capacity(keep + 1);
        let mut survivors: Vec<(usize, f64)> = Vec::new();
        let mut candidates = 0;
        for slot in 0..self.ids.len() {
            if !self.accepts(slot, filter) {
                continue;
            }
            candidates += 1;
            let denominator = self.norms[slot] * query_norm;
            let (estimate, error) = if needs_similarity && denominator > 0.0 {
                let scale = self.scales[slot];
                let approximate =
                    scale * query_scale * dot_codes(self.codes.get(slot), &query_codes) as f32;
                // |q·v − q̂·v̂| ≤ ‖q‖₁·s_v/2 + ‖v̂‖₁·s_q/2, and ‖v̂‖₁ ≤ ‖v‖₁ + n·s_v/2.
                let bound = (query_l1 * scale
                    + (self.l1_norms[slot] + n * scale / 2.0) * query_scale)
                    / 2.0;
                let cosine = (approximate / denominator).clamp(-1.0, 1.0);
                let error = f64::from(alpha * bound / denominator) * similarity_weight.abs();
                // Rounding in the f32 arithmetic itself, generously.
                (score(slot, blended(slot, cosine)), error * 1.001 + 1e-6)
            } else if lexical.is_some() {
                (score(slot, blended(slot, 0.0)), 0.0)
            } else {
                (score(slot, given_at(slot)), 0.0)
            };
            let (low, high) = (estimate - error, estimate + error);
            if floor.len() == keep && floor.peek().is_some_and(|Reverse(f)| high < f.0) {
                continue;
            }
            survivors.push((slot, high));
            if floor.len() < keep {
                floor.push(Reverse(Ordered(low)));
            } else if floor.peek().is_some_and(|Reverse(f)| low > f.0) {
                floor.pop();
                floor.push(Reverse(Ordered(low)));
            }
        }
        let cutoff = match floor.peek() {
            Some(Reverse(f)) if floor.len() == keep => f.0,
            _ => f64::NEG_INFINITY,
        };

        // Pass 2: exact scores for the survivors.
        let mut hits: Vec<Hit<'_>> = survivors
            .into_iter()
            .filter(|(_, high)| *high >= cutoff)
            .map(|(slot, _)| {
                let denominator = self.norms[slot] * query_norm;
                let similarity = if needs_similarity && denominator > 0.0 {
                    blended(
                        slot,
                        (dot(self.vectors.get(slot), query) / denominator).clamp(-1.0, 1.0),
                    )
                } else if lexical.is_some() {
                    blended(slot, 0.0)
                } else {
                    given_at(slot)
                };
                Hit {
                    score: score(slot, similarity),
                    similarity,
                    slot,
                    id: &self.ids[slot],
                }
            })
            .collect();
        let rescored = hits.len();
        hits.sort_by(|a, b| b.cmp(a));
        hits.truncate(keep);
        let hits = hits
            .into_iter()
            .map(|hit| {
                let point = self.stored(hit.slot, false);
                (hit, point)
            })
            .collect();
        Searched {
            hits,
            candidates,
            rescored,
        }
    }
}
