//! Grammar-constrained decoding with llguidance: JSON mode and JSON Schema become token masks,
//! so the model can only emit schema-valid output, and tokens the grammar forces are appended
//! without sampling ("fast-forward").
//!
//! The token environment is built from our own tokenizer's token bytes (no second tokenizer
//! crate): control tokens are marked with llguidance's 0xFF prefix, and EOS is the chat
//! model's end-of-turn token, so generation ends as soon as the root JSON value is complete.

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use super::tokenizer::Tokenizer;
use super::tools::{ToolSyntax, ToolUse};
use super::EngineError;

/// What output format a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// Any JSON object (Ollama `format: "json"`, OpenAI `json_object`).
    JsonObject,
    /// Output valid against this JSON Schema.
    Schema(Value),
}

struct Env {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Grammar text is UTF-8 in practice; invalid bytes fall back to the trie's greedy split.
        match std::str::from_utf8(s) {
            Ok(text) => self
                .tokenizer
                .encode(text)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// A model's grammar compiler, shared by the worker and the engine's admission (a bad schema is
/// refused before it is queued). The parser factory is built on first use: not every model
/// serves constrained requests, and building it walks the whole vocabulary.
#[derive(Clone)]
pub struct Grammars {
    tokenizer: Arc<Tokenizer>,
    vocab_size: usize,
    stop_tokens: Vec<u32>,
    factory: Arc<OnceLock<ConstraintFactory>>,
}

impl Grammars {
    pub fn new(tokenizer: Arc<Tokenizer>, vocab_size: usize, stop_tokens: Vec<u32>) -> Self {
        Self {
            tokenizer,
            vocab_size,
            stop_tokens,
            factory: Arc::new(OnceLock::new()),
        }
    }

    /// The parser factory; its EOS is the end-of-turn token.
    pub fn factory(&self) -> Result<&ConstraintFactory, EngineError> {
        if let Some(f) = self.factory.get() {
            return Ok(f);
        }
        // The template's end-of-turn marker comes first in `stop_tokens` order only by id; pick
        // it explicitly so a chat answer ends where the turn ends.
        let eos = ["<|im_end|>", "<|eot_id|>"]
            .iter()
            .find_map(|n| self.tokenizer.special_id(n))
            .or(self.tokenizer.eos)
            .or(self.stop_tokens.first().copied())
            .ok_or_else(|| {
                EngineError::BadModel("the model has no end-of-sequence token".into())
            })?;
        let f = ConstraintFactory::new(self.tokenizer.clone(), self.vocab_size, eos)?;
        Ok(self.factory.get_or_init(|| f))
    }

    /// A fresh matcher for `format` (a schema llguidance cannot compile is a 400).
    pub fn compile(&self, format: &Format) -> Result<Constraint, EngineError> {
        self.factory()?.matcher(format)
    }

    /// A fresh matcher for an answer that may (or must) call `tools` in `syntax`; a text
    /// answer, where allowed, follows `format` when one is given.
    pub fn compile_tools(
        &self,
        syntax: ToolSyntax,
        tools: &ToolUse,
        format: Option<&Format>,
    ) -> Result<Constraint, EngineError> {
        tools.validate()?;
        self.factory()?.tools_matcher(syntax, tools, format)
    }

    /// The matcher a request needs: its tools' grammar (a text answer following `format`),
    /// else its format's, else none.
    pub fn compile_request(
        &self,
        tools: Option<(ToolSyntax, &ToolUse)>,
        format: Option<&Format>,
    ) -> Result<Option<Constraint>, EngineError> {
        match (tools, format) {
            (Some((syntax, tools)), format) => self.compile_tools(syntax, tools, format).map(Some),
            (None, Some(format)) => self.compile(format).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// One per loaded model: the token trie and llguidance's parser factory.
pub struct ConstraintFactory {
    factory: ParserFactory,
    eos: TokenId,
}

impl ConstraintFactory {
    /// `vocab_size` is the model's (logit) vocabulary, which may exceed the tokenizer's.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        vocab_size: usize,
        eos: TokenId,
    ) -> Result<Self, EngineError> {
        let words: Vec<Vec<u8>> = (0..vocab_size as u32)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id);
                if tokenizer.is_special(id) {
                    let mut marked = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    marked.extend_from_slice(bytes);
                    marked
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let mut info = TokRxInfo::new(vocab_size as u32, eos);
        info.tok_bos = tokenizer.bos;
        info.tok_end_of_turn = Some(eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Env { trie, tokenizer });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| EngineError::Grammar(e.to_string()))?;
        factory.quiet();
        Ok(Self { factory, eos })
    }

    pub fn eos(&self) -> TokenId {
        self.eos
    }

    /// Compiles a format into a fresh matcher. A schema llguidance cannot compile is the
    /// caller's error (400), with llguidance's message.
    pub fn matcher(&self, format: &Format) -> Result<Constraint, EngineError> {
        let grammar = TopLevelGrammar::from_json_schema(format.schema());
        self.compile(grammar, "invalid JSON schema in format")
    }

    /// See [`Grammars::compile_tools`].
    pub fn tools_matcher(
        &self,
        syntax: ToolSyntax,
        tools: &ToolUse,
        format: Option<&Format>,
    ) -> Result<Constraint, EngineError> {
        let lark = syntax.grammar(tools, format.map(Format::schema).as_ref());
        self.compile(
            TopLevelGrammar::from_lark(lark),
            "invalid tools (a parameters schema that cannot be enforced?)",
        )
    }

    fn compile(&self, grammar: TopLevelGrammar, what: &str) -> Result<Constraint, EngineError> {
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| EngineError::InvalidInput(format!("{what}: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(EngineError::InvalidInput(format!("{what}: {e}")));
        }
        Ok(Constraint {
            matcher,
            eos: self.eos,
        })
    }
}

impl Format {
    /// The JSON Schema this format enforces, as it is compiled: closed objects, compact
    /// whitespace.
    pub fn schema(&self) -> Value {
        let mut schema = match self {
            Format::JsonObject => json!({"type": "object"}),
            Format::Schema(s) => s.clone(),
        };
        close_objects(&mut schema);
        with_compact_whitespace(schema)
    }
}

/// `maxItems` of a list whose schema gives none.
pub const MAX_ITEMS: u64 = 64;

const LENIENT_KEYWORDS: &[&str] = &["uniqueItems", "contentEncoding", "contentMediaType"];

/// Objects that list their `properties` and say nothing about others get
/// `additionalProperties: false` (OpenAI's strict mode does the same). Every output stays valid
/// against the schema as written, and a small model cannot wander off inventing keys until
/// `num_predict` cuts the JSON in half.
/// Also drops [`LENIENT_KEYWORDS`], bounds integers to the I-JSON range and lists to
/// [`MAX_ITEMS`].
pub(super) fn close_objects(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        if let Some(items) = schema.as_array_mut() {
            items.iter_mut().for_each(close_objects);
        }
        return;
    };
    // Not expressible as a grammar; accepted and not enforced (documented in the README).
    // Everything else llguidance cannot honour is an error, not silently ignored.
    for keyword in LENIENT_KEYWORDS {
        obj.remove(*keyword);
    }
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
    // An unbounded integer lets a looping model emit digits until num_predict; I-JSON
    // (RFC 7493) already limits interoperable integers to ±(2^53 - 1).
    let is_integer = match obj.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
        _ => false,
    };
    // Likewise a list without a bound: a looping small model repeats an item until the
    // context is full, and the answer is cut mid-value. No household document lists more.
    let is_array = match obj.get("type") {
        Some(Value::String(t)) => t == "array",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "array"),
        _ => obj.contains_key("items") || obj.contains_key("prefixItems"),
    };
    if is_array && !obj.contains_key("maxItems") {
        obj.insert("maxItems".into(), json!(MAX_ITEMS));
    }
    if is_integer {
        const SAFE: i64 = (1 << 53) - 1;
        if !obj.contains_key("minimum") && !obj.contains_key("exclusiveMinimum") {
            obj.insert("minimum".into(), json!(-SAFE));
        }
        if !obj.contains_key("maximum") && !obj.contains_key("exclusiveMaximum") {
            obj.insert("maximum".into(), json!(SAFE));
        }
    }
    for (key, sub) in obj.iter_mut() {
        match key.as_str() {
            // Maps from names to schemas.
            "properties" | "$defs" | "definitions" | "patternProperties" | "dependentSchemas" => {
                if let Some(m) = sub.as_object_mut() {
                    m.values_mut().for_each(close_objects);
                }
            }
            // A schema or a list of schemas.
            "items"
            | "prefixItems"
            | "anyOf"
            | "oneOf"
            | "allOf"
            | "not"
            | "if"
            | "then"
            | "else"
            | "additionalProperties"
            | "contains" => close_objects(sub),
            _ => {}
        }
    }
}

/// No whitespace between tokens: small models otherwise fill the output with blank lines
/// (ollama#2577), and every byte of whitespace is a decode step.
pub(super) fn with_compact_whitespace(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(|| {
            json!({"whitespace_flexible": false, "item_separator": ",", "key_separator": ":",
                   "lenient": false})
        });
    }
    schema
}

/// One request's grammar state.
pub struct Constraint {
    matcher: Matcher,
    eos: TokenId,
}

impl Constraint {
    /// The token that ends the output (the model's end-of-turn token).
    pub fn eos(&self) -> TokenId {
        self.eos
    }

    /// Tokens the grammar allows and no other (empty when there is a choice).
    pub fn forced_tokens(&mut self) -> Vec<TokenId> {
        self.matcher.compute_ff_tokens()
    }

    /// Whether `token` may come next. EOS is allowed only where the grammar may end.
    pub fn allows(&mut self, token: TokenId) -> bool {
        if token == self.eos {
            return self.matcher.is_accepting().unwrap_or(false);
        }
        self.matcher.validate_tokens(&[token]).unwrap_or(0) == 1
    }

    /// Sets every disallowed logit to -inf.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), EngineError> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| EngineError::InvalidInput(format!("grammar: {e}")))?;
        for (i, l) in logits.iter_mut().enumerate() {
            if !mask.is_allowed(i as TokenId) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    pub fn consume(&mut self, tokens: &[TokenId]) -> Result<(), EngineError> {
        self.matcher
            .consume_tokens(tokens)
            .map_err(|e| EngineError::InvalidInput(format!("grammar: {e}")))
    }

    /// The root value is complete: only EOS may follow.
    pub fn is_finished(&mut self) -> bool {
        self.matcher.is_stopped()
            || (self.matcher.is_accepting().unwrap_or(false)
                && self
                    .matcher
                    .compute_mask()
                    .map(|m| m.num_set() == 1)
                    .unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_properties_close_the_object_unless_the_schema_says_otherwise() {
        let mut s = json!({"type": "object", "properties": {
            "a": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "additionalProperties": {"type": "object", "properties": {}},
            "b": {"type": "array", "items": {"properties": {"y": {}}}}},
            "$defs": {"d": {"properties": {}, "additionalProperties": true}}});
        close_objects(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        // A property that happens to be named like the keyword is a schema, not the keyword.
        assert_eq!(
            s["properties"]["additionalProperties"]["additionalProperties"],
            false
        );
        assert_eq!(s["properties"]["b"]["items"]["additionalProperties"], false);
        assert_eq!(s["$defs"]["d"]["additionalProperties"], true);
        let mut n = json!({"type": "integer", "minimum": 0});
        close_objects(&mut n);
        assert_eq!(n["minimum"], 0);
        assert_eq!(n["maximum"], (1i64 << 53) - 1);
        let mut list = json!({"type": "array", "items": {"type": "string"}});
        close_objects(&mut list);
        assert_eq!(list["maxItems"], MAX_ITEMS);
        let mut bounded = json!({"type": "array", "maxItems": 3});
        close_objects(&mut bounded);
        assert_eq!(bounded["maxItems"], 3);
        let mut free = json!({"type": "object"});
        close_objects(&mut free);
        assert!(
            free.get("additionalProperties").is_none(),
            "JSON mode stays open"
        );
    }
}
