//! Which taxonomy entries the prompt offers. Real instances have hundreds of tags and
//! correspondents; listing them all would leave no room for the document (and with enough of
//! them, no room at all). Each list gets a share of the context; when an instance's list is
//! longer than its share, the entries the document's text supports most are offered, as many
//! as fit. The grammar offers the same entries, so the answer is always one the prompt showed.

use super::types::Named;

/// Characters per token assumed for entry names (short, often not English: tokenizers split
/// them finely). Conservative, so the estimate errs towards fitting.
const CHARS_PER_TOKEN: usize = 2;
/// Share of the context the three lists may fill together.
const TAXONOMY_SHARE: usize = 4;

/// Character budgets for each list of one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub tags: usize,
    pub correspondents: usize,
    pub document_types: usize,
}

impl Budget {
    /// A quarter of `num_ctx` tokens for the lists: types and correspondents up to a quarter
    /// of that each, tags the rest (and whatever the other two leave unused).
    pub fn for_context(num_ctx: usize, types_len: usize, correspondents_len: usize) -> Budget {
        let total = num_ctx / TAXONOMY_SHARE * CHARS_PER_TOKEN;
        let document_types = types_len.min(total / 4);
        let correspondents = correspondents_len.min(total / 4);
        Budget {
            tags: total - document_types - correspondents,
            correspondents,
            document_types,
        }
    }
}

/// Characters an entry costs in the prompt's comma-separated list.
fn cost(n: &Named) -> usize {
    n.name.chars().count() + 2
}

/// Characters a whole list costs.
pub fn list_cost(items: &[Named]) -> usize {
    items.iter().map(cost).sum()
}

/// All of `items` when they fit in `budget` characters; otherwise the best-scored ones that
/// fit (ties keep taxonomy order), returned in taxonomy order.
pub fn fit(items: &[Named], budget: usize, score: impl Fn(&Named) -> f32) -> Vec<Named> {
    if list_cost(items) <= budget {
        return items.to_vec();
    }
    let mut order: Vec<(usize, f32)> = items
        .iter()
        .enumerate()
        .map(|(i, n)| (i, score(n)))
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut keep = vec![false; items.len()];
    let mut used = 0;
    for (i, _) in order {
        let c = cost(&items[i]);
        if used + c <= budget {
            used += c;
            keep[i] = true;
        }
    }
    items
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Lower-case words of three or more letters or digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .collect()
}

/// How much of an entry's name the text contains: the share of the name's words found as a
/// word of the text or, for words of five letters or more, inside one (compounds:
/// "Versicherung" in "Kfz-Versicherungsschein").
pub fn lexical_score(name: &str, text_words: &std::collections::HashSet<String>) -> f32 {
    let name_words = words(name);
    if name_words.is_empty() {
        return 0.0;
    }
    let found = name_words
        .iter()
        .filter(|w| {
            text_words.contains(*w)
                || w.chars().count() >= 5 && text_words.iter().any(|t| t.contains(w.as_str()))
        })
        .count();
    found as f32 / name_words.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> Vec<Named> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Named::new(i as i64 + 1, n))
            .collect()
    }

    #[test]
    fn small_lists_are_offered_whole() {
        let items = named(&["a", "b", "c"]);
        assert_eq!(fit(&items, 100, |_| 0.0), items);
    }

    #[test]
    fn long_lists_keep_the_best_scored_within_budget_in_order() {
        let items = named(&["alpha", "beta", "gamma", "delta"]);
        // Each costs 7 characters: a budget of 15 holds two.
        let kept = fit(&items, 15, |n| if n.name == "delta" { 2.0 } else { 0.0 });
        let names: Vec<&str> = kept.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["alpha", "delta"]);
        assert!(list_cost(&kept) <= 15);
    }

    #[test]
    fn five_thousand_tags_fit_the_context() {
        let names: Vec<String> = (0..5000).map(|i| format!("Sammelordner {i:04}")).collect();
        let items = named(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let b = Budget::for_context(2048, 300, 300);
        let kept = fit(&items, b.tags, |_| 0.0);
        assert!(!kept.is_empty() && list_cost(&kept) <= b.tags);
        assert!(b.tags + b.correspondents + b.document_types <= 2048 / 4 * 2);
    }

    #[test]
    fn lexical_score_finds_names_and_compound_parts() {
        let text: std::collections::HashSet<String> =
            words("Ihr Kfz-Versicherungsschein der Allianz")
                .into_iter()
                .collect();
        assert_eq!(lexical_score("Versicherung", &text), 1.0);
        assert_eq!(lexical_score("Allianz Leben", &text), 0.5);
        assert_eq!(lexical_score("Steuer", &text), 0.0);
    }
}
