//! Everything Paperless-ngx: the classifier (document text + the instance's taxonomy → a
//! suggestion), the REST client, the safe write-back, and the triggers that run it.

pub mod amounts;
pub mod apply;
pub mod archive;
pub mod classifier;
pub mod client;
pub mod concepts;
pub mod dates;
pub mod evidence;
pub mod facts;
pub mod fields;
pub mod filed;
pub mod fusion;
pub mod journal;
pub mod meaning;
pub mod neighbours;
pub mod prompt;
pub mod rules;
pub mod shortlist;
pub mod title;
pub mod triggers;
pub mod types;
pub mod worker;

pub use apply::{Applied, Fields, Policy, UnknownField};
pub use classifier::{Classification, Classifier, ClassifyError, Job};
pub use client::{PaperlessClient, PaperlessError};
pub use neighbours::{ExampleSet, NoNeighbours};
pub use types::{Example, Named, Suggestion, Taxonomy};
pub use worker::{Enqueued, Outcome, Paperless, ProcessError, Report, Settings, Trigger};
