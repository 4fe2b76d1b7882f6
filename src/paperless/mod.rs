//! Everything Paperless-ngx: the classifier (document text + the instance's taxonomy → a
//! suggestion), the REST client, the safe write-back, and the triggers that run it.

pub mod apply;
pub mod classifier;
pub mod client;
pub mod dates;
pub mod evidence;
pub mod lexicon;
pub mod shortlist;
pub mod title;
pub mod triggers;
pub mod worker;

pub use apply::{Applied, Fields, Policy};
pub use classifier::{classify, Classification, ClassifyError, Suggestion, Taxonomy};
pub use client::{PaperlessClient, PaperlessError};
pub use worker::{Enqueued, Outcome, Paperless, ProcessError, Report, Settings, Trigger};
