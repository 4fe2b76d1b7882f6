//! Tool calling on the real model: whatever the tools' schemas and however hot the sampling,
//! every call the model makes names an offered function and its arguments validate against
//! that function's schema (checked with the independent `jsonschema` crate).

mod common;

use candlelight::engine::tools::CallSplitter;
use candlelight::engine::{
    generate_constrained, ChatMessage, FinishReason, Format, LoadedModel, Session, Tool, ToolCall,
    ToolChoice, ToolUse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// A random property schema: the shapes tool parameters use, bounded so that hot sampling
/// ends (unbounded strings at temperature 2 run to `max_tokens`).
fn property(rng: &mut StdRng, depth: usize) -> Value {
    match rng.random_range(0..if depth > 0 { 7 } else { 9 }) {
        0 => json!({"type": "string", "maxLength": rng.random_range(1..16)}),
        1 => json!({"type": "integer", "minimum": -50, "maximum": rng.random_range(0..1000)}),
        2 => json!({"type": "number", "minimum": 0, "maximum": 100}),
        3 => json!({"type": "boolean"}),
        4 => json!({"enum": ["low", "medium", "high", "über"]}),
        5 => json!({"type": "array", "items": {"type": "string", "maxLength": 8},
                    "maxItems": rng.random_range(1..4)}),
        6 => json!({"type": ["string", "null"], "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}),
        7 => object(rng, depth + 1),
        // A free-form map, as paperless-ai's schema has.
        _ => json!({"type": "object", "maxProperties": 2,
                    "additionalProperties": {"type": "string", "maxLength": 6}}),
    }
}

fn object(rng: &mut StdRng, depth: usize) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for i in 0..rng.random_range(0..4) {
        let name = format!("p{depth}_{i}");
        if rng.random_bool(0.6) {
            required.push(json!(name));
        }
        props.insert(name, property(rng, depth));
    }
    json!({"type": "object", "properties": props, "required": required})
}

fn random_tools(rng: &mut StdRng) -> Vec<Tool> {
    (0..rng.random_range(1..4))
        .map(|i| Tool {
            name: format!("tool_{i}"),
            description: format!("Function number {i}"),
            parameters: object(rng, 0),
        })
        .collect()
}

struct Answer {
    text: String,
    calls: Vec<ToolCall>,
    finish: FinishReason,
}

fn answer(
    lm: &LoadedModel,
    messages: &[ChatMessage],
    tools: &ToolUse,
    format: Option<&Format>,
    temperature: f32,
    seed: u64,
) -> Answer {
    let max_tokens = match tools.choice {
        // A text answer is not what these tests look at; calls are bounded by their schemas.
        ToolChoice::Auto if format.is_none() => 160,
        _ => 400,
    };
    let prompt = lm
        .card
        .template
        .render_with_tools(messages, &tools.tools, true, &lm.tokenizer)
        .unwrap();
    let syntax = lm.card.template.tool_syntax().expect("ChatML offers tools");
    let constraint = lm
        .grammars
        .compile_tools(syntax, tools, format)
        .unwrap_or_else(|e| panic!("{e}: {tools:?}"));
    let req = common::sampled(lm, prompt, temperature, seed, max_tokens);
    let mut session = Session::new(lm.model.new_cache(2048).unwrap());
    let mut splitter = CallSplitter::new(syntax);
    let mut text = String::new();
    let c = generate_constrained(lm, &mut session, &req, Some(constraint), &mut |t| {
        text.push_str(&splitter.push(t));
        true
    })
    .unwrap();
    let (rest, calls) = splitter.finish();
    text.push_str(&rest);
    Answer {
        text,
        calls,
        finish: c.finish,
    }
}

fn assert_valid(calls: &[ToolCall], tools: &ToolUse, context: &str) {
    for call in calls {
        let tool = tools
            .tools
            .iter()
            .find(|t| t.name == call.name)
            .unwrap_or_else(|| panic!("{context}: unknown function {:?}", call.name));
        let validator = jsonschema::validator_for(&tool.parameters).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&call.arguments)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{context}: {} {} -> {errors:?} (schema {})",
            call.name,
            call.arguments,
            tool.parameters
        );
    }
}

fn ask(question: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", question)]
}

#[test]
fn random_tool_schemas_at_hot_temperatures_always_give_valid_calls() {
    let lm = common::model();
    let mut rng = StdRng::seed_from_u64(7);
    let (mut runs, mut calls) = (0, 0);
    for round in 0..9 {
        let list = random_tools(&mut rng);
        let choice = match round % 3 {
            0 => ToolChoice::Required,
            1 => ToolChoice::Function(list[list.len() - 1].name.clone()),
            _ => ToolChoice::Auto,
        };
        let tools = ToolUse {
            tools: list,
            choice: choice.clone(),
            parallel: true,
        };
        // With `auto` the question starts the way a call does, so calls come too.
        let question = "<tool_call> Please call one of the functions.";
        for temperature in [1.0, 1.6, 2.2] {
            let seed = rng.random();
            let a = answer(&lm, &ask(question), &tools, None, temperature, seed);
            let context = format!("round {round} {choice:?} T={temperature}: {:?}", a.text);
            assert_valid(&a.calls, &tools, &context);
            if choice != ToolChoice::Auto || !a.calls.is_empty() {
                // (A hot text answer may run to max_tokens; calls are bounded.)
                assert_eq!(a.finish, FinishReason::Stop, "{context}");
            }
            match &choice {
                ToolChoice::Required => assert!(!a.calls.is_empty(), "{context}"),
                ToolChoice::Function(name) => {
                    assert_eq!(a.calls.len(), 1, "{context}");
                    assert_eq!(&a.calls[0].name, name, "{context}");
                }
                ToolChoice::Auto => {}
            }
            if choice != ToolChoice::Auto {
                assert_eq!(a.text, "", "{context}: calls only");
            }
            runs += 1;
            calls += a.calls.len();
        }
    }
    eprintln!("{calls} calls in {runs} runs");
    assert_eq!(runs, 27);
    assert!(calls >= 18, "{calls} calls in {runs} runs");
}

fn weather() -> ToolUse {
    ToolUse {
        tools: vec![Tool {
            name: "get_weather".into(),
            description: "Get the current weather for a city".into(),
            parameters: json!({"type": "object", "properties": {
                "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city"]}),
        }],
        choice: ToolChoice::Auto,
        parallel: true,
    }
}

#[test]
fn with_auto_the_model_chooses_between_text_and_a_call() {
    let lm = common::model();
    let tools = weather();
    let a = answer(&lm, &ask("Why is the sky blue?"), &tools, None, 0.0, 1);
    assert!(a.calls.is_empty(), "{:?}", a.calls);
    assert!(a.text.len() > 20, "a text answer: {:?}", a.text);
    assert!(!a.text.contains("<tool_call>"));
    let a = answer(
        &lm,
        &ask("<tool_call> get_weather for Berlin"),
        &tools,
        None,
        0.0,
        1,
    );
    assert_eq!(a.text, "");
    assert!(!a.calls.is_empty());
    assert_valid(&a.calls, &tools, "asked for a call");
    assert_eq!(a.calls[0].name, "get_weather");
    assert_eq!(a.calls[0].arguments["city"], "Berlin");
}

#[test]
fn a_format_shapes_the_text_answer_when_tools_are_offered() {
    let lm = common::model();
    let tools = weather();
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string",
        "maxLength": 40}}, "required": ["answer"]});
    let format = Format::Schema(schema.clone());
    for seed in 1..4 {
        let a = answer(
            &lm,
            &ask("Why is the sky blue? Answer in JSON."),
            &tools,
            Some(&format),
            1.0,
            seed,
        );
        assert_valid(&a.calls, &tools, "format");
        if a.calls.is_empty() {
            let v: Value = serde_json::from_str(&a.text).unwrap();
            assert!(jsonschema::is_valid(&schema, &v), "{v}");
        }
    }
}

#[test]
fn a_conversation_with_calls_and_results_continues() {
    let lm = common::model();
    let tools = weather();
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls.push(ToolCall {
        name: "get_weather".into(),
        arguments: json!({"city": "Paris"}),
    });
    let mut result = ChatMessage::new("tool", "{\"temperature\": 14, \"sky\": \"rain\"}");
    result.tool_name = Some("get_weather".into());
    let messages = vec![
        ChatMessage::new("user", "What is the weather in Paris?"),
        call,
        result,
    ];
    let a = answer(&lm, &messages, &tools, None, 0.0, 1);
    assert_eq!(a.finish, FinishReason::Stop);
    assert_valid(&a.calls, &tools, "after a result");
    assert!(!a.text.is_empty() || !a.calls.is_empty());
}
