//! `candlelight bench`: prefill and decode throughput, median of N runs, and peak memory.

use std::time::Instant;

use serde::Serialize;

use crate::engine::{
    generate, generate_constrained, ChatMessage, Constraint, EngineError, Format, GenerateRequest,
    LoadedModel, SamplingParams, Session, ToolUse,
};

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub quantization: String,
    pub device: String,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub runs: usize,
    pub load_seconds: f64,
    /// Median over runs.
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub prefill_tok_s_all: Vec<f64>,
    pub decode_tok_s_all: Vec<f64>,
    pub peak_rss_mib: f64,
    /// The model file's bytes times decode tokens per second / 1e9: what decoding reads of
    /// the weights per second (each weight once per token; a tied embedding once, as the
    /// output matrix). The KV cache and activations are not counted.
    pub decode_weight_gb_s: f64,
    /// The machine's read bandwidth with the same threads (`read_bandwidth_gb_s`), on the CPU
    /// only; `decode_weight_gb_s` over it is decode's share of the physical limit.
    pub read_bandwidth_gb_s: Option<f64>,
}

/// A prompt of exactly `n` tokens made of ordinary prose (a realistic token mix).
pub fn synthetic_prompt(lm: &LoadedModel, n: usize) -> Result<Vec<u32>, EngineError> {
    const TEXT: &str = "Invoice number 2024-0815 from Stadtwerke München, dated 12 March 2024. \
        Electricity supply for the period January to February: 412 kWh at 0.32 EUR per kWh, \
        basic fee 12.50 EUR, total amount due 144.34 EUR including 19% VAT. Please transfer the \
        amount within 14 days to the account stated below, quoting the customer number. ";
    let base = lm.tokenizer.encode(TEXT)?;
    Ok(base.iter().copied().cycle().take(n).collect())
}

/// Facts about the run that the report repeats.
#[derive(Debug, Clone)]
pub struct BenchSetup {
    pub model: String,
    pub device: String,
    pub threads: usize,
    pub load_seconds: f64,
}

pub fn run(
    lm: &LoadedModel,
    setup: &BenchSetup,
    prompt_tokens: usize,
    gen_tokens: usize,
    runs: usize,
) -> Result<BenchReport, EngineError> {
    let prompt = synthetic_prompt(lm, prompt_tokens.max(1))?;
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    let mut cache = lm.model.new_cache(prompt.len() + gen_tokens + 1)?;
    for _ in 0..runs.max(1) {
        cache.clear();
        let t = Instant::now();
        let mut logits = lm.model.forward(&prompt, &mut cache)?;
        prefill.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
        // Greedy decode; EOS is ignored so every run produces exactly gen_tokens.
        let t = Instant::now();
        for _ in 0..gen_tokens {
            let next = logits.argmax(0)?.to_scalar::<u32>()?;
            logits = lm.model.forward(&[next], &mut cache)?;
        }
        if gen_tokens > 0 {
            decode.push(gen_tokens as f64 / t.elapsed().as_secs_f64());
        }
    }
    let decode_tok_s = median(&decode);
    // Before the bandwidth measurement, whose buffer would count.
    let peak_rss_mib = peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    Ok(BenchReport {
        model: setup.model.clone(),
        quantization: lm.card.info.quantization.clone(),
        device: setup.device.clone(),
        threads: setup.threads,
        prompt_tokens: prompt.len(),
        gen_tokens,
        runs: runs.max(1),
        load_seconds: setup.load_seconds,
        prefill_tok_s: median(&prefill),
        decode_tok_s,
        decode_weight_gb_s: lm.card.info.file_size as f64 * decode_tok_s / 1e9,
        read_bandwidth_gb_s: lm
            .model
            .device()
            .is_cpu()
            .then(|| read_bandwidth_gb_s(READ_BYTES, 5)),
        prefill_tok_s_all: prefill,
        decode_tok_s_all: decode,
        peak_rss_mib,
    })
}

/// Far beyond any CPU cache, so every pass reads from memory.
const READ_BYTES: usize = 512 << 20;

/// Memory read bandwidth on the inference thread pool: the best of `passes` parallel sums over
/// `bytes` of memory (touched beforehand, so page faults stay out), in GB/s. A sum is what a
/// decode kernel does with its weights: stream them once, keep little.
pub fn read_bandwidth_gb_s(bytes: usize, passes: usize) -> f64 {
    use rayon::prelude::*;
    let words: Vec<u64> = (0..bytes / 8).map(|i| i as u64 | 1).collect();
    let chunk = (words.len() / (rayon::current_num_threads() * 8)).max(4096);
    let mut best = 0f64;
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        let sum = words
            .par_chunks(chunk)
            .map(|c| c.iter().fold(0u64, |a, &w| a.wrapping_add(w)))
            .reduce(|| 0, u64::wrapping_add);
        let secs = t.elapsed().as_secs_f64();
        // The sum is used, so the reads cannot be optimised away.
        std::hint::black_box(sum);
        best = best.max(bytes as f64 / secs / 1e9);
    }
    best
}

/// Constrained vs unconstrained decoding on the same prompt.
#[derive(Debug, Clone, Serialize)]
pub struct ConstrainedReport {
    pub output_tokens: usize,
    /// Emitted tokens per second of decoding, median over runs.
    pub constrained_tok_s: f64,
    pub unconstrained_tok_s: f64,
    /// Share of output tokens the grammar forced (appended without sampling).
    pub forced_share: f64,
    /// Masks actually computed per run (only when a sampled token was rejected).
    pub masks_computed: usize,
    /// Cost of a full mask at every output position (replayed), in microseconds.
    pub mask_us_median: f64,
    pub mask_us_p99: f64,
    pub output: String,
}

const CLASSIFY_PROMPT: &str = "Classify this document and answer in JSON.\n\nStadtwerke München \
    GmbH, Emmy-Noether-Str. 2, 80992 München. Rechnung Nr. 2024-0815 vom 12.03.2024. \
    Stromlieferung Januar bis Februar: 412 kWh, Gesamtbetrag 144,34 EUR inkl. 19% MwSt.";

const TOOLS_PROMPT: &str = "Find the electricity invoices of March 2024 from Stadtwerke \
    München and add the tag Strom to them.";

/// What the output is held to.
pub enum BenchGrammar {
    /// A response format, on a classification prompt.
    Format(Format),
    /// Calls to these tools (the choice is theirs), on a request that calls for them.
    Tools(ToolUse),
}

impl BenchGrammar {
    fn prompt(&self, lm: &LoadedModel) -> Result<Vec<u32>, EngineError> {
        match self {
            BenchGrammar::Format(_) => lm.chat_prompt(&[ChatMessage::new("user", CLASSIFY_PROMPT)]),
            BenchGrammar::Tools(t) => lm.card.template.render_with_tools(
                &[ChatMessage::new("user", TOOLS_PROMPT)],
                &t.tools,
                true,
                &lm.tokenizer,
            ),
        }
    }

    fn matcher(&self, lm: &LoadedModel) -> Result<Constraint, EngineError> {
        match self {
            BenchGrammar::Format(f) => lm.grammars.compile(f),
            BenchGrammar::Tools(t) => {
                let syntax = lm
                    .card
                    .template
                    .tool_syntax()
                    .ok_or(EngineError::NotCapable("tools"))?;
                lm.grammars.compile_tools(syntax, t, None)
            }
        }
    }
}

pub fn run_constrained(
    lm: &LoadedModel,
    grammar: &BenchGrammar,
    max_tokens: usize,
    runs: usize,
) -> Result<ConstrainedReport, EngineError> {
    let prompt = grammar.prompt(lm)?;
    let mut req = GenerateRequest {
        prompt,
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop_tokens: lm.stop_tokens(),
        stop_strings: vec![],
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs.max(1) {
        let c = grammar.matcher(lm)?;
        // A fresh session each run: no prefix reuse between the two variants.
        let mut s = Session::new(lm.model.new_cache(req.prompt.len() + max_tokens + 1)?);
        let done = generate_constrained(lm, &mut s, &req, Some(c), &mut |_| true)?;
        with.push(done.tokens.len() as f64 / done.eval.as_secs_f64().max(1e-9));
        last = Some(done);
    }
    let done = last.expect("at least one run");
    // The same number of tokens without a grammar (EOS ignored so the count matches).
    req.max_tokens = Some(done.tokens.len().max(1));
    req.stop_tokens.clear();
    for _ in 0..runs.max(1) {
        let mut s = Session::new(lm.model.new_cache(req.prompt.len() + max_tokens + 1)?);
        let plain = generate(lm, &mut s, &req, &mut |_| true)?;
        without.push(plain.tokens.len() as f64 / plain.eval.as_secs_f64().max(1e-9));
    }
    // Replay the output through a fresh matcher, computing the full mask at every position.
    let mut c = grammar.matcher(lm)?;
    let mut scratch = vec![0f32; lm.model.config().vocab_size];
    let mut times: Vec<f64> = Vec::new();
    for t in &done.tokens {
        let start = std::time::Instant::now();
        c.mask(&mut scratch)?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
        c.consume(&[*t])?;
    }
    times.sort_by(f64::total_cmp);
    let p99 = times
        .get(((times.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    let stats = done.constraint.clone().unwrap_or_default();
    Ok(ConstrainedReport {
        output_tokens: done.tokens.len(),
        constrained_tok_s: median(&with),
        unconstrained_tok_s: median(&without),
        forced_share: stats.forced as f64 / done.tokens.len().max(1) as f64,
        masks_computed: stats.mask_times.len(),
        mask_us_median: median(&times),
        mask_us_p99: p99,
        output: done.text,
    })
}

/// One kernel's speed on one matrix (`bench --kernels`).
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    pub block_type: String,
    /// Layout and instruction set, e.g. `interleaved/avx512`.
    pub kernel: String,
    pub rows: usize,
    pub cols: usize,
    /// Activation rows of the prefill-shaped product.
    pub prefill_rows: usize,
    /// Median over runs, multiply-adds per second / 1e9.
    pub prefill_gmac_s: f64,
    pub decode_gmac_s: f64,
    /// The file's weight bytes read per decode product, per second / 1e9.
    pub decode_gb_s: f64,
}

/// Every block type's SIMD kernels, and candle's, on one `(rows, cols)` matrix of random weights (normal,
/// std 0.02, quantized by candle): a prefill-shaped product of `m` activation rows and a
/// decode-shaped one of a single row, each timed `runs` times after a warm-up.
pub fn run_kernels(
    rows: usize,
    cols: usize,
    m: usize,
    runs: usize,
) -> Result<Vec<KernelReport>, EngineError> {
    use crate::engine::kernels;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    let w = Tensor::randn(0f32, 0.02, (rows, cols), &Device::Cpu)?;
    let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m * cols,), &Device::Cpu)?.to_vec1()?;
    let macs = (rows * cols) as f64;
    let mut out = Vec::new();
    for dtype in [
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        let bytes = QTensor::quantize(&w, dtype)?.data()?.to_vec();
        for layout in kernels::variants(dtype, &bytes, rows, cols) {
            let time = |m: usize, n: usize| {
                layout.matmul(&x[..m * cols], m);
                let per_run: Vec<f64> = (0..n)
                    .map(|_| {
                        let t = Instant::now();
                        std::hint::black_box(layout.matmul(&x[..m * cols], m));
                        t.elapsed().as_secs_f64()
                    })
                    .collect();
                median(&per_run)
            };
            let prefill = time(m, runs.max(1));
            // Decode products take a millisecond or two: more of them for a stable median.
            let decode = time(1, 20 * runs.max(1));
            out.push(KernelReport {
                block_type: layout.block_type().to_string(),
                kernel: layout.kernel(),
                rows,
                cols,
                prefill_rows: m,
                prefill_gmac_s: macs * m as f64 / prefill / 1e9,
                decode_gmac_s: macs / decode / 1e9,
                decode_gb_s: bytes.len() as f64 / decode / 1e9,
            });
        }
    }
    Ok(out)
}

pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    /// Every block type is measured: our interleaved kernels where the CPU has them (what
    /// models use), first, and candle's `QMatMul` on the same weights always.
    #[test]
    fn kernel_bench_covers_every_block_type_and_layout() {
        let reports = run_kernels(16, 512, 5, 1).unwrap();
        for ty in ["Q4_1", "Q8_0", "Q4_K", "Q6_K"] {
            let kernels: Vec<&str> = reports
                .iter()
                .filter(|r| r.block_type == ty)
                .map(|r| r.kernel.as_str())
                .collect();
            if crate::engine::kernels::matrix::has_avx2() {
                assert!(kernels[0].starts_with("interleaved/"), "{ty}: {kernels:?}");
                assert!(kernels.contains(&"interleaved/avx2"), "{ty}: {kernels:?}");
            }
            assert_eq!(kernels.last(), Some(&"candle"), "{ty}: {kernels:?}");
        }
        assert!(reports
            .iter()
            .all(|r| r.prefill_gmac_s > 0.0 && r.decode_gmac_s > 0.0 && r.prefill_rows == 5));
    }

    #[test]
    fn peak_rss_is_readable_on_linux() {
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
