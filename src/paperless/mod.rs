//! Everything Paperless-ngx: the classifier that turns a document's text and the instance's
//! taxonomy into a suggestion. (The REST client, safe apply and triggers come with the rest of
//! the Paperless issue.)

pub mod classifier;
pub mod dates;
pub mod evidence;

pub use classifier::{classify, Classification, ClassifyError, Suggestion, Taxonomy};
