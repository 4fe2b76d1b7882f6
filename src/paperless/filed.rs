//! What the owner's entries mean, learned from how the owner filed: a tag stands for a topic
//! when the documents carrying it show that topic's cues far more often than the archive's
//! documents do overall. This needs no name at all, so it holds for any naming; it speaks only
//! for entries with enough labelled documents, and names (`meaning.rs`) speak for the rest.

use super::concepts::{self, TOPICS, TYPES};
use super::neighbours::Neighbours;
use super::types::{by_name, Named, Taxonomy};

/// Labelled documents an entry needs before its documents speak for its meaning.
const MIN_FILED: usize = 2;

/// Per entry (in taxonomy order): for each concept, the share of the entry's documents that
/// show it minus the share of all labelled documents that do; `None` with too few documents.
pub type Lift = Vec<Option<Vec<f32>>>;

/// The lifts of the taxonomy's tags (over [`TOPICS`]) and document types (over [`TYPES`]).
#[derive(Debug, Default)]
pub struct Filed {
    pub tags: Lift,
    pub document_types: Lift,
}

/// Counts of one kind of entry: documents per entry, per (entry, concept), per concept.
struct Counts {
    entry: Vec<usize>,
    pair: Vec<Vec<usize>>,
    concept: Vec<usize>,
    docs: usize,
}

impl Counts {
    fn new(entries: usize, concepts: usize) -> Self {
        Self {
            entry: vec![0; entries],
            pair: vec![vec![0; concepts]; entries],
            concept: vec![0; concepts],
            docs: 0,
        }
    }

    fn add(&mut self, entries: &[usize], shown: &[usize]) {
        self.docs += 1;
        for &c in shown {
            self.concept[c] += 1;
        }
        for &e in entries {
            self.entry[e] += 1;
            for &c in shown {
                self.pair[e][c] += 1;
            }
        }
    }

    fn lift(&self) -> Lift {
        let all = self.docs.max(1) as f32;
        self.entry
            .iter()
            .zip(&self.pair)
            .map(|(&n, pair)| {
                (n >= MIN_FILED).then(|| {
                    pair.iter()
                        .zip(&self.concept)
                        .map(|(&both, &c)| both as f32 / n as f32 - c as f32 / all)
                        .collect()
                })
            })
            .collect()
    }
}

fn indices(all: &[Named], names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .filter_map(|n| by_name(all, n))
        .filter_map(|e| all.iter().position(|x| std::ptr::eq(x, e)))
        .collect()
}

/// Learns from every labelled document `neighbours` holds, except `exclude` (the document
/// being classified never teaches about itself).
pub fn learn(neighbours: &dyn Neighbours, exclude: Option<&str>, t: &Taxonomy) -> Filed {
    let mut tags = Counts::new(t.tags.len(), TOPICS.len());
    let mut types = Counts::new(t.document_types.len(), TYPES.len());
    neighbours.each_labelled(exclude, &mut |doc| {
        let names: Vec<&str> = doc.tags.iter().map(String::as_str).collect();
        tags.add(&indices(&t.tags, &names), &concepts::shown_topics(doc.text));
        let kind: Vec<usize> = concepts::type_cue(doc.text)
            .map(|c| c.concept)
            .into_iter()
            .collect();
        let entry = doc.document_type.map(|d| indices(&t.document_types, &[d]));
        types.add(&entry.unwrap_or_default(), &kind);
    });
    if tags.docs == 0 {
        return Filed::default();
    }
    Filed {
        tags: tags.lift(),
        document_types: types.lift(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paperless::neighbours::{Filing, Neighbour};

    /// Labelled documents as (text, tags), nothing else.
    struct Shelf(Vec<(String, Vec<String>)>);

    impl Neighbours for Shelf {
        fn nearest(&self, _: &[f32], _: usize, _: Option<&str>) -> Vec<Neighbour> {
            Vec::new()
        }

        fn each_labelled(&self, _: Option<&str>, f: &mut dyn FnMut(Filing<'_>)) {
            for (text, tags) in &self.0 {
                f(Filing {
                    text,
                    document_type: None,
                    tags,
                });
            }
        }
    }

    #[test]
    fn names_that_mean_nothing_learn_their_topic_from_the_documents_filed_under_them() {
        let car = TOPICS.iter().position(|c| c.key == "car").unwrap();
        let cue = |c: usize, n: usize| TOPICS[c].cues[n];
        let (a, b) = (vec!["Ordner A".to_owned()], vec!["Ordner B".to_owned()]);
        let other = (car + 1) % TOPICS.len();
        let texts: Vec<String> = vec![
            format!("Sehr geehrte Kundin, {} und {}.", cue(car, 0), cue(car, 1)),
            format!("Ihre {} wurde geprüft.", cue(car, 0)),
            format!("Betreff: {} {}", cue(other, 0), cue(other, 0)),
            format!("{} ist erledigt.", cue(other, 0)),
            "Einladung zum Sommerfest.".to_owned(),
        ];
        let labels = [b.clone(), b, a.clone(), a, vec![]];
        let docs = Shelf(texts.into_iter().zip(labels).collect());
        let t = Taxonomy {
            tags: vec![Named::new(1, "Ordner A"), Named::new(2, "Ordner B")],
            ..Taxonomy::default()
        };
        let learned = learn(&docs, None, &t);
        let meaning = crate::paperless::meaning::by_filing(2, TOPICS.len(), &learned.tags);
        assert_eq!(meaning, vec![Some(other), Some(car)], "{learned:?}");
    }

    #[test]
    fn an_entry_means_what_its_documents_show_more_than_the_rest() {
        let mut c = Counts::new(3, 2);
        // Entry 0 on two documents that both show concept 1; entry 1 on one document only.
        c.add(&[0], &[1]);
        c.add(&[0, 2], &[1]);
        c.add(&[1, 2], &[0]);
        c.add(&[2], &[]);
        let lift = c.lift();
        let e0 = lift[0].as_ref().unwrap();
        assert!((e0[1] - 0.5).abs() < 1e-6, "{e0:?}"); // 2/2 - 2/4
        assert!((e0[0] + 0.25).abs() < 1e-6, "{e0:?}"); // 0/2 - 1/4
        assert!(lift[1].is_none(), "one document says too little");
        // Entry 2 is on three of the four documents: close to the base rates either way.
        let e2 = lift[2].as_ref().unwrap();
        assert!((e2[1] + 1.0 / 6.0).abs() < 1e-6, "{e2:?}"); // 1/3 - 2/4
        assert!((e2[0] - 1.0 / 12.0).abs() < 1e-6, "{e2:?}"); // 1/3 - 1/4
    }
}
