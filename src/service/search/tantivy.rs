//! The embedded search backend: a tantivy index in the database directory.
//!
//! One document per searchable event: its room and sender as exact terms, its text in
//! the field of its kind (body, name, topic), its stream position (the document's key,
//! and a fast field for "recent" order) and its event id, stored only: unique random
//! ids would make every segment's term dictionary, and every merge, costly. A query word matches a whole indexed word (ranked by BM25)
//! or, at half the weight, the beginning of one, so "meet" finds "meeting"; every word
//! of the query must match.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use parking_lot::Mutex;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order as TantivyOrder, ReloadPolicy, Score,
    TantivyDocument, Term,
    collector::{Count, TopDocs},
    directory::MmapDirectory,
    doc,
    query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery, TermSetQuery},
    schema::{
        FAST, Field as TantivyField, INDEXED, IndexRecordOption, STORED, STRING, Schema,
        TextFieldIndexing, TextOptions, Value,
    },
    tokenizer::{LowerCaser, RemoveLongFilter, TextAnalyzer},
};

use super::{Change, Field, Hit, Hits, Order, SearchBackend, SearchQuery, words::Words};
use crate::{Error, Result};

/// The writer's memory budget (tantivy's least). A writer lives only while it applies
/// changes: an idle server holds none of it.
const WRITER_BYTES: usize = 15_000_000;
/// Words shorter than this match only whole words (a one-letter prefix matches too much).
const PREFIX_MIN_CHARS: usize = 2;

/// The fields of the schema.
#[derive(Clone, Copy)]
struct Fields {
    event_id: TantivyField,
    room_id: TantivyField,
    sender: TantivyField,
    position: TantivyField,
    body: TantivyField,
    name: TantivyField,
    topic: TantivyField,
}

/// The name the index knows [`Words`] by.
const WORDS: &str = "palisade_words";

/// A text field cut into words by [`Words`], with frequencies (BM25); no positions, as
/// no query matches phrases.
fn words() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS)
            .set_index_option(IndexRecordOption::WithFreqs),
    )
}

/// [`Words`], lowercased, without words longer than tantivy's default limit.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(Words)
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .build()
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        event_id: builder.add_text_field("event_id", STORED),
        room_id: builder.add_text_field("room_id", STRING | STORED),
        sender: builder.add_text_field("sender", STRING),
        position: builder.add_u64_field("position", INDEXED | FAST),
        body: builder.add_text_field("body", words()),
        name: builder.add_text_field("name", words()),
        topic: builder.add_text_field("topic", words()),
    };
    (builder.build(), fields)
}

fn failed(error: impl std::fmt::Display) -> Error {
    Error::internal(format!("search index: {error}"))
}

pub struct Tantivy {
    index: Index,
    reader: IndexReader,
    /// Held while changes are applied, so only one writer exists at a time.
    writing: Mutex<()>,
    fields: Fields,
    /// A commit happened since the reader last looked: the next search reloads it.
    stale: AtomicBool,
    /// The highest position of any document the index may hold (each commit records it
    /// as its payload): a document past it is new and replaces nothing, so adding it
    /// needs no delete first.
    through: AtomicU64,
}

/// What an index records of [`Tantivy::through`]: `None` (an index made before it was
/// recorded) counts as the highest position.
fn through_of(index: &Index) -> u64 {
    index
        .load_metas()
        .ok()
        .and_then(|metas| metas.payload)
        .and_then(|payload| payload.parse().ok())
        .unwrap_or(u64::MAX)
}

impl Tantivy {
    /// Opens the index in `directory`, making it if there is none, or making it anew if
    /// it has another layout; also says whether it is new (and so empty).
    pub fn open(directory: &Path) -> Result<(Self, bool)> {
        let (schema, fields) = schema();
        std::fs::create_dir_all(directory).map_err(failed)?;
        let existing = directory.join("meta.json").exists();
        let open = |directory: &Path| -> tantivy::Result<Index> {
            let index = Index::open_or_create(MmapDirectory::open(directory)?, schema.clone())?;
            index.tokenizers().register(WORDS, analyzer());
            Ok(index)
        };
        let (index, fresh) = match open(directory) {
            Ok(index) => (index, !existing),
            Err(error) => {
                tracing::warn!(%error, "the search index is unreadable or of another layout: making it anew");
                std::fs::remove_dir_all(directory).map_err(failed)?;
                std::fs::create_dir_all(directory).map_err(failed)?;
                (open(directory).map_err(failed)?, true)
            }
        };
        let through = if fresh { 0 } else { through_of(&index) };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(failed)?;
        Ok((
            Self {
                index,
                reader,
                writing: Mutex::new(()),
                fields,
                stale: AtomicBool::new(false),
                through: AtomicU64::new(through),
            },
            fresh,
        ))
    }

    /// A writer for one round of changes (dropped after its commit).
    fn writer(&self) -> Result<IndexWriter> {
        self.index
            .writer_with_num_threads(1, WRITER_BYTES)
            .map_err(failed)
    }

    fn text_field(&self, field: Field) -> TantivyField {
        match field {
            Field::Body => self.fields.body,
            Field::Name => self.fields.name,
            Field::Topic => self.fields.topic,
        }
    }

    /// Every word of the query must match one of the fields, whole or as a prefix.
    fn query(&self, query: &SearchQuery<'_>) -> Option<BooleanQuery> {
        let words = self.words(query.term);
        if words.is_empty() || query.rooms.is_empty() {
            return None;
        }
        let fields: Vec<TantivyField> = if query.fields.is_empty() {
            vec![self.fields.body, self.fields.name, self.fields.topic]
        } else {
            query.fields.iter().map(|f| self.text_field(*f)).collect()
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for word in &words {
            let mut either: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for field in &fields {
                let term = Term::from_field_text(*field, word);
                either.push((
                    Occur::Should,
                    Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                ));
                if word.chars().count() >= PREFIX_MIN_CHARS {
                    let prefix = FuzzyTermQuery::new_prefix(term, 0, true);
                    either.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(Box::new(prefix), 0.5)),
                    ));
                }
            }
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(either))));
        }
        let terms = |field: TantivyField, values: &mut dyn Iterator<Item = &str>| {
            TermSetQuery::new(values.map(|value| Term::from_field_text(field, value)))
        };
        clauses.push((
            Occur::Must,
            Box::new(terms(
                self.fields.room_id,
                &mut query.rooms.iter().map(|room| room.as_str()),
            )),
        ));
        if let Some(senders) = query.senders {
            clauses.push((
                Occur::Must,
                Box::new(terms(
                    self.fields.sender,
                    &mut senders.iter().map(|sender| sender.as_str()),
                )),
            ));
        }
        if !query.not_senders.is_empty() {
            clauses.push((
                Occur::MustNot,
                Box::new(terms(
                    self.fields.sender,
                    &mut query.not_senders.iter().map(|sender| sender.as_str()),
                )),
            ));
        }
        Some(BooleanQuery::new(clauses))
    }

    fn hit(&self, searcher: &tantivy::Searcher, address: DocAddress, rank: f64) -> Result<Hit> {
        let document: TantivyDocument = searcher.doc(address).map_err(failed)?;
        let text = |field: TantivyField| -> Result<String> {
            document
                .get_first(field)
                .and_then(|value| value.as_str().map(str::to_owned))
                .ok_or_else(|| failed("a document without its ids"))
        };
        Ok(Hit {
            event_id: text(self.fields.event_id)?.try_into().map_err(failed)?,
            room_id: text(self.fields.room_id)?.try_into().map_err(failed)?,
            rank,
        })
    }
}

impl SearchBackend for Tantivy {
    fn apply(&self, changes: &[Change]) -> Result<()> {
        let _writing = self.writing.lock();
        let mut writer = self.writer()?;
        let through = self.through.load(Ordering::Acquire);
        let mut new_through = through;
        for change in changes {
            match change {
                Change::Add(document) => {
                    // Applied again after a crash: replaces what the index has.
                    if document.position <= through {
                        writer.delete_term(Term::from_field_u64(
                            self.fields.position,
                            document.position,
                        ));
                    }
                    new_through = new_through.max(document.position);
                    writer
                        .add_document(doc!(
                            self.fields.event_id => document.event_id.as_str(),
                            self.fields.room_id => document.room_id.as_str(),
                            self.fields.sender => document.sender.as_str(),
                            self.fields.position => document.position,
                            self.text_field(document.field) => document.text.as_str(),
                        ))
                        .map_err(failed)?;
                }
                Change::Remove(position) => {
                    writer.delete_term(Term::from_field_u64(self.fields.position, *position));
                }
            }
        }
        let mut commit = writer.prepare_commit().map_err(failed)?;
        commit.set_payload(&new_through.to_string());
        commit.commit().map_err(failed)?;
        self.through.store(new_through, Ordering::Release);
        self.stale.store(true, Ordering::Release);
        Ok(())
    }

    fn search(&self, query: &SearchQuery<'_>) -> Result<Hits> {
        let Some(tantivy_query) = self.query(query) else {
            return Ok(Hits::default());
        };
        if self.stale.swap(false, Ordering::AcqRel) {
            self.reader.reload().map_err(failed)?;
        }
        let searcher = self.reader.searcher();
        let total = searcher.search(&tantivy_query, &Count).map_err(failed)?;
        let page = TopDocs::with_limit(query.limit.max(1)).and_offset(query.offset);
        let addresses: Vec<(f64, DocAddress)> = match query.order {
            Order::Rank => searcher
                .search(&tantivy_query, &page.order_by_score())
                .map_err(failed)?
                .into_iter()
                .map(|(score, address): (Score, DocAddress)| (f64::from(score), address))
                .collect(),
            Order::Recent => searcher
                .search(
                    &tantivy_query,
                    &page.order_by_fast_field::<u64>("position", TantivyOrder::Desc),
                )
                .map_err(failed)?
                .into_iter()
                .map(|(position, address)| (position.unwrap_or(0) as f64, address))
                .collect(),
        };
        let hits = addresses
            .into_iter()
            .take(query.limit)
            .map(|(rank, address)| self.hit(&searcher, address, rank))
            .collect::<Result<_>>()?;
        Ok(Hits { total, hits })
    }

    fn clear(&self) -> Result<()> {
        let _writing = self.writing.lock();
        let mut writer = self.writer()?;
        writer.delete_all_documents().map_err(failed)?;
        let mut commit = writer.prepare_commit().map_err(failed)?;
        commit.set_payload("0");
        commit.commit().map_err(failed)?;
        self.through.store(0, Ordering::Release);
        self.stale.store(true, Ordering::Release);
        Ok(())
    }

    fn words(&self, text: &str) -> Vec<String> {
        let Ok(mut analyzer) = self.index.tokenizer_for_field(self.fields.body) else {
            return Vec::new();
        };
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        while let Some(token) = stream.next() {
            words.push(token.text.clone());
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use ruma::{OwnedRoomId, OwnedUserId};

    use super::*;
    use crate::service::search::Document;

    fn document(id: &str, room: &str, position: u64, text: &str) -> Change {
        Change::Add(Document {
            event_id: id.try_into().unwrap(),
            room_id: room.try_into().unwrap(),
            sender: "@a:x".try_into().unwrap(),
            kind: "m.room.message".to_owned(),
            position,
            field: Field::Body,
            text: text.to_owned(),
        })
    }

    fn search(index: &Tantivy, term: &str, rooms: &[OwnedRoomId], order: Order) -> Vec<String> {
        let senders: Option<&[OwnedUserId]> = None;
        index
            .search(&SearchQuery {
                term,
                fields: &[],
                rooms,
                senders,
                not_senders: &[],
                order,
                offset: 0,
                limit: 10,
            })
            .unwrap()
            .hits
            .into_iter()
            .map(|hit| hit.event_id.to_string())
            .collect()
    }

    #[test]
    fn words_match_whole_or_as_prefixes_in_the_rooms_asked_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rooms: Vec<OwnedRoomId> = vec!["!r:x".try_into().unwrap()];
        {
            let (index, fresh) = Tantivy::open(dir.path()).unwrap();
            assert!(fresh);
            index
                .apply(&[
                    document("$1", "!r:x", 1, "The meeting is on Monday"),
                    document("$2", "!r:x", 2, "Let us meet on Tuesday"),
                    document("$3", "!other:x", 3, "meet elsewhere"),
                    document("$4", "!r:x", 4, "nothing here"),
                ])
                .unwrap();
        }
        let (index, fresh) = Tantivy::open(dir.path()).unwrap();
        assert!(!fresh);
        assert_eq!(search(&index, "MEET", &rooms, Order::Recent), ["$2", "$1"]);
        // The whole word ranks above the prefix.
        assert_eq!(search(&index, "meet", &rooms, Order::Rank)[0], "$2");
        assert_eq!(search(&index, "meet monday", &rooms, Order::Rank), ["$1"]);
        assert!(search(&index, "friday", &rooms, Order::Rank).is_empty());
        index.apply(&[Change::Remove(2)]).unwrap();
        assert_eq!(search(&index, "meet", &rooms, Order::Recent), ["$1"]);
        // The same event indexed again replaces itself.
        index
            .apply(&[document("$1", "!r:x", 1, "The meeting is on Monday")])
            .unwrap();
        assert_eq!(search(&index, "meeting", &rooms, Order::Recent), ["$1"]);
        assert_eq!(index.words("Hello, World"), ["hello", "world"]);
    }

    #[test]
    fn a_word_inside_text_written_without_spaces_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let rooms: Vec<OwnedRoomId> = vec!["!r:x".try_into().unwrap()];
        let (index, _) = Tantivy::open(dir.path()).unwrap();
        index
            .apply(&[
                document("$1", "!r:x", 1, "我们明天去北京开会"),
                document("$2", "!r:x", 2, "東京で会いましょう"),
                document("$3", "!r:x", 3, "내일 서울에서 만나요"),
            ])
            .unwrap();
        assert_eq!(search(&index, "北京", &rooms, Order::Rank), ["$1"]);
        assert_eq!(search(&index, "开会", &rooms, Order::Rank), ["$1"]);
        assert_eq!(search(&index, "東京", &rooms, Order::Rank), ["$2"]);
        assert_eq!(search(&index, "서울", &rooms, Order::Rank), ["$3"]);
        assert!(search(&index, "上海", &rooms, Order::Rank).is_empty());
    }
}
